//! Cases 1–3, the HTTP ones: an authorized read against liveness, WeChat login against the
//! fake `jscode2session` alone, and password logins against raw argon2id verifications (plus
//! the latency of reads while logins saturate the machine).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotbind::config::DEV_WECHAT_APPID;
use iotbind::wechat::fake::FAKE_APP_SECRET;
use secrecy::SecretString;
use serde_json::json;

use crate::Options;
use crate::load::{Outcome, Pool, Stats, clients, closed_loop, expect_status, measure};
use crate::report::{Row, Side, Table, failures, ms};
use crate::server::{self, InProcess};

/// Case 1: `GET /api/v1/me` with a valid JWT vs `GET /health/live`, same server, same
/// connections.
pub async fn authorized_read(options: &Options, table: &mut Table) {
    let app = InProcess::start(&options.database).await;
    let setup = server::client();
    let (_, token) = server::wechat_user(&setup, &app.base, "reader").await;
    let token = Arc::new(token);
    let connections = options.connections;
    let pool = clients(connections);

    let live_url = Arc::new(app.url("/health/live"));
    let live = {
        let pool = pool.clone();
        measure(options, connections, move |w| {
            let request = pool[w].get(live_url.as_str());
            expect_status(request, 200)
        })
        .await
    };
    let me_url = Arc::new(app.url("/api/v1/me"));
    let me = {
        let pool = pool.clone();
        let token = token.clone();
        measure(options, connections, move |w| {
            let request = pool[w].get(me_url.as_str()).bearer_auth(token.as_str());
            expect_status(request, 200)
        })
        .await
    };
    let ratio = me.rate() / live.rate();
    table.push(Row {
        case: format!("1 authorized read ({connections} conn.)"),
        measured: Side::from_stats("GET /api/v1/me", &me, "req/s"),
        baseline: Side::from_stats("GET /health/live", &live, "req/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 0.6".to_owned(),
        met: ratio >= 0.6 && me.failed == 0,
        notes: [failures("/me", &me), failures("/health/live", &live)]
            .into_iter()
            .flatten()
            .collect(),
    });
    app.stop().await;
}

/// Mints `count` codes for the given openids (round robin) with some concurrency.
async fn mint_codes(base: &str, openids: &[String], count: usize) -> Vec<String> {
    let client = server::client();
    let per_task = count.div_ceil(16);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let client = client.clone();
        let base = base.to_owned();
        let openids = openids.to_vec();
        tasks.spawn(async move {
            let mut codes = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let openid = &openids[(task * per_task + i) % openids.len()];
                codes.push(server::mint_code(&client, &base, Some(openid)).await.0);
            }
            codes
        });
    }
    let mut codes = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        codes.extend(done.expect("a minting task panicked"));
    }
    codes
}

/// Runs `op` over single-use codes: a warm-up on a first pool shows the rate, then enough
/// codes for the measured time are minted before it starts (minting is not timed).
async fn measure_with_codes<F, Fut>(
    options: &Options,
    app: &InProcess,
    openids: &[String],
    op: F,
) -> Stats
where
    F: Fn(usize, String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let pool = Pool::default();
    let with_codes = {
        let pool = pool.clone();
        move |w: usize| {
            let code = pool.take();
            let op = op.clone();
            async move {
                match code {
                    Some(code) => op(w, code).await,
                    None => Outcome::Exhausted,
                }
            }
        }
    };
    pool.extend(mint_codes(&app.base, openids, 4_000).await);
    let warm = closed_loop(options.connections, options.warmup, with_codes.clone()).await;
    pool.clear();
    // Half as many again as the warm-up rate needs, in case the measured run goes faster.
    let needed = (warm.rate() * options.duration.as_secs_f64() * 1.5) as usize + 1_000;
    pool.extend(mint_codes(&app.base, openids, needed).await);
    // Phase marks on stderr, for profilers and CPU samplers attached to the process.
    eprintln!("  measuring for {:?}", options.duration);
    let stats = closed_loop(options.connections, options.duration, with_codes).await;
    eprintln!("  measured");
    if pool.len() == 0 {
        eprintln!("note: the pre-minted codes ran out before the measured time was over");
    }
    stats
}

/// Case 2: WeChat login of bound users vs what a login contains once: a request to the
/// server (`/health/live`) and then the fake `jscode2session` call that the server makes on
/// the login's behalf, chained in one harness iteration; both with fresh pre-minted codes.
pub async fn wechat_login(options: &Options, table: &mut Table) {
    let app = InProcess::start(&options.database).await;
    // Registering is a password attempt too: the users come from many addresses.
    let setup = LoginAddresses::new(1);
    let mut openids = Vec::new();
    for i in 0..options.connections {
        openids.push(
            server::wechat_user(&setup.client(0), &app.base, &format!("wx{i}"))
                .await
                .0,
        );
    }
    let pool = clients(options.connections);

    let exchange_url = Arc::new(app.url("/dev/wechat/sns/jscode2session"));
    let live_url = Arc::new(app.url("/health/live"));
    let exchange = {
        let pool = pool.clone();
        measure_with_codes(options, &app, &openids, move |w, code| {
            let live = pool[w].get(live_url.as_str());
            let request = pool[w].get(exchange_url.as_str()).query(&[
                ("appid", DEV_WECHAT_APPID),
                ("secret", FAKE_APP_SECRET),
                ("js_code", code.as_str()),
                ("grant_type", "authorization_code"),
            ]);
            async move {
                if let Err(err) = live.send().await {
                    return Outcome::Failed(err.to_string());
                }
                // The fake answers 200 for errors too, as WeChat does: check for the openid.
                match request.send().await {
                    Ok(response) => match response.text().await {
                        Ok(body) if body.contains("\"openid\"") => Outcome::Ok,
                        Ok(body) => Outcome::Failed(body),
                        Err(err) => Outcome::Failed(err.to_string()),
                    },
                    Err(err) => Outcome::Failed(err.to_string()),
                }
            }
        })
        .await
    };
    let login_url = Arc::new(app.url("/api/v1/auth/wechat/login"));
    let login = {
        let pool = pool.clone();
        measure_with_codes(options, &app, &openids, move |w, code| {
            let request = pool[w]
                .post(login_url.as_str())
                .json(&json!({ "code": code }));
            async move {
                match request.send().await {
                    Ok(response) => match response.text().await {
                        Ok(body) if body.contains("\"authenticated\"") => Outcome::Ok,
                        Ok(body) => Outcome::Failed(body),
                        Err(err) => Outcome::Failed(err.to_string()),
                    },
                    Err(err) => Outcome::Failed(err.to_string()),
                }
            }
        })
        .await
    };
    let ratio = login.rate() / exchange.rate();
    table.push(Row {
        case: format!("2 WeChat login ({} conn.)", options.connections),
        measured: Side::from_stats("POST /auth/wechat/login", &login, "req/s"),
        baseline: Side::from_stats("/health/live + fake jscode2session", &exchange, "req/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 0.5".to_owned(),
        met: ratio >= 0.5 && login.failed == 0,
        notes: [
            failures("wechat login", &login),
            failures("jscode2session", &exchange),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    app.stop().await;
}

/// Case 3: password logins vs raw argon2id verifications with the server's own hasher, and
/// `/me` latency while logins keep every core busy.
pub async fn password_work(options: &Options, table: &mut Table) {
    let app = InProcess::start(&options.database).await;
    let workers = options.login_connections;
    let mut usernames = Vec::new();
    let mut phc = String::new();
    for i in 0..workers {
        let name = format!("pw{i}");
        phc = server::password_user(&app.state, &name).await;
        usernames.push(name);
    }
    let usernames = Arc::new(usernames);
    let setup = server::client();
    let token = Arc::new(server::login(&setup, &app.base, "pw0").await);

    // The baseline: the server's own hasher (its bound on concurrent hashes included), called
    // directly by as many tasks as there are login connections.
    let hasher = app.state.logins.credentials.hasher().clone();
    let phc = Arc::new(phc);
    let server_runtime = app.handle();
    let verify = measure(options, workers, move |_| {
        let hasher = hasher.clone();
        let phc = phc.as_str().to_owned();
        // On the server's runtime, as a login's verification runs.
        let task = server_runtime.spawn(async move {
            hasher
                .verify(SecretString::from(server::PASSWORD), phc)
                .await
        });
        async move {
            match task.await {
                Ok(Ok(true)) => Outcome::Ok,
                Ok(Ok(false)) => Outcome::Failed("the password did not verify".to_owned()),
                Ok(Err(err)) => Outcome::Failed(err.to_string()),
                Err(err) => Outcome::Failed(err.to_string()),
            }
        }
    })
    .await;

    let login_url = Arc::new(app.url("/api/v1/auth/login"));
    let addresses = Arc::new(LoginAddresses::new(workers));
    let login_op = {
        let usernames = usernames.clone();
        move |w: usize| {
            let request = addresses.client(w).post(login_url.as_str()).json(
                &json!({ "username": usernames[w % usernames.len()], "password": server::PASSWORD }),
            );
            expect_status(request, 200)
        }
    };
    let logins = measure(options, workers, login_op.clone()).await;
    let ratio = logins.rate() / verify.rate();
    table.push(Row {
        case: format!("3a password logins ({workers} conn.)"),
        measured: Side::from_stats("POST /auth/login", &logins, "logins/s"),
        baseline: Side::from_stats("argon2id verify, same hasher", &verify, "verifies/s"),
        ratio: format!("{ratio:.2}"),
        goal: "≥ 0.9".to_owned(),
        met: ratio >= 0.9 && logins.failed == 0,
        notes: [
            failures("password login", &logins),
            failures("argon2 verify", &verify),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });

    // Reads at a modest concurrency, first alone, then with the logins running beside them.
    let readers = options.read_connections;
    let me_pool = clients(readers);
    let me_url = Arc::new(app.url("/api/v1/me"));
    let me_op = move |w: usize| {
        let request = me_pool[w].get(me_url.as_str()).bearer_auth(token.as_str());
        expect_status(request, 200)
    };
    let alone = measure(options, readers, me_op.clone()).await;
    let busy_logins = tokio::spawn(closed_loop(
        workers,
        options.duration + options.warmup + Duration::from_millis(500),
        login_op,
    ));
    tokio::time::sleep(options.warmup).await;
    let under_load = closed_loop(readers, options.duration, me_op).await;
    let logins_meanwhile = busy_logins.await.expect("the login load ran");
    let p99 = under_load.p99().unwrap_or(Duration::MAX);
    table.push(Row {
        case: format!("3b /me during logins ({readers} + {workers} conn.)"),
        measured: Side::from_stats("GET /me while logins run", &under_load, "req/s"),
        baseline: Side::from_stats("GET /me, no logins", &alone, "req/s"),
        ratio: format!("p99 {}", ms(under_load.p99())),
        goal: "p99 < 25 ms".to_owned(),
        met: p99 < Duration::from_millis(25) && under_load.failed == 0,
        notes: [
            failures("/me under login load", &under_load),
            Some(format!(
                "3b: the logins beside the reads ran at {:.0}/s",
                logins_meanwhile.rate()
            )),
        ]
        .into_iter()
        .flatten()
        .collect(),
    });
    app.stop().await;
}

/// Login clients that move to a new loopback source address (127.x.y.z) every few requests.
///
/// The server brakes password attempts per client address (`src/api/attempts.rs`: 20 a
/// minute); a login load from one address would measure that brake, not the logins. Real
/// logins come from many addresses, and all of 127.0.0.0/8 reaches the server on 127.0.0.1.
struct LoginAddresses {
    workers: Vec<Mutex<(reqwest::Client, u32)>>,
    next: AtomicU32,
}

/// Requests per address, well under the limit's burst of 20.
const REQUESTS_PER_ADDRESS: u32 = 10;

impl LoginAddresses {
    fn new(workers: usize) -> LoginAddresses {
        let addresses = LoginAddresses {
            workers: Vec::new(),
            next: AtomicU32::new(2),
        };
        let workers = (0..workers)
            .map(|_| Mutex::new((addresses.fresh_client(), 0)))
            .collect();
        LoginAddresses {
            workers,
            ..addresses
        }
    }

    fn fresh_client(&self) -> reqwest::Client {
        let address = loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            // Skip x.y.z.0 and x.y.z.255, which look like network and broadcast addresses.
            if !matches!(n & 0xff, 0 | 0xff) {
                break Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff));
            }
        };
        reqwest::Client::builder()
            .local_address(IpAddr::V4(address))
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .expect("an HTTP client")
    }

    /// Worker `w`'s client, replaced by one on a new address when it has had its share.
    fn client(&self, w: usize) -> reqwest::Client {
        let mut slot = self.workers[w].lock().expect("the client slot's lock");
        if slot.1 >= REQUESTS_PER_ADDRESS {
            *slot = (self.fresh_client(), 0);
        }
        slot.1 += 1;
        slot.0.clone()
    }
}
