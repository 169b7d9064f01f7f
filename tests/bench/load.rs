//! The load driver: N workers in a closed loop for a fixed time, every completed operation's
//! latency in an HDR histogram, and the throughput, p50 and p99 that come out.
//!
//! One driver measures both the case and its baseline, so whatever the driver itself costs
//! (it shares the machine with the server) weighs on both sides of a ratio alike.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one operation came to.
pub enum Outcome {
    Ok,
    /// Counted, and the first message kept, but not timed.
    Failed(String),
    /// No more input (pre-minted codes ran out): this worker stops.
    Exhausted,
}

/// Throughput and latency of one run.
#[derive(Clone)]
pub struct Stats {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
}

impl Stats {
    /// An empty result, for numbers that come from elsewhere.
    pub fn from_rate(ok: u64, elapsed: Duration) -> Stats {
        Stats {
            ok,
            failed: 0,
            first_error: None,
            elapsed,
            histogram: new_histogram(),
        }
    }

    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q`, or `None` when nothing was timed.
    pub fn latency(&self, q: f64) -> Option<Duration> {
        (!self.histogram.is_empty())
            .then(|| Duration::from_micros(self.histogram.value_at_quantile(q)))
    }

    pub fn p50(&self) -> Option<Duration> {
        self.latency(0.5)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.latency(0.99)
    }
}

/// Microseconds from 1 µs to 60 s, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op` for the warm-up time, then for the measured time, and returns the measured run.
pub async fn measure<F, Fut>(options: &crate::Options, workers: usize, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    closed_loop(workers, options.warmup, op.clone()).await;
    closed_loop(workers, options.duration, op).await
}

/// Runs `op(worker)` in `workers` concurrent loops until `duration` has passed (operations
/// under way then are finished and counted; the elapsed time includes them).
pub async fn closed_loop<F, Fut>(workers: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let op = op.clone();
        tasks.spawn(async move {
            let mut stats = Stats::from_rate(0, Duration::ZERO);
            while Instant::now() < deadline {
                let begun = Instant::now();
                match op(worker).await {
                    Outcome::Ok => {
                        stats.ok += 1;
                        stats
                            .histogram
                            .saturating_record(begun.elapsed().as_micros() as u64);
                    }
                    Outcome::Failed(message) => {
                        stats.failed += 1;
                        stats.first_error.get_or_insert(message);
                    }
                    Outcome::Exhausted => break,
                }
            }
            stats.elapsed = started.elapsed();
            stats
        });
    }
    let mut total = Stats::from_rate(0, Duration::ZERO);
    while let Some(done) = tasks.join_next().await {
        let stats = done.expect("a load worker panicked");
        total.ok += stats.ok;
        total.failed += stats.failed;
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
        total.elapsed = total.elapsed.max(stats.elapsed);
        total
            .histogram
            .add(&stats.histogram)
            .expect("histograms of equal bounds add up");
    }
    total
}

/// One HTTP client per worker, each keeping one connection alive: N workers are N
/// connections, as `oha -c N` or `wrk -c N` would open.
pub fn clients(count: usize) -> Arc<Vec<reqwest::Client>> {
    Arc::new(
        (0..count)
            .map(|_| {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .build()
                    .expect("an HTTP client")
            })
            .collect(),
    )
}

/// Sends a request and reads the whole body; `Ok` when the status is `expect`.
pub async fn expect_status(request: reqwest::RequestBuilder, expect: u16) -> Outcome {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(_) if status == expect => Outcome::Ok,
                Ok(body) => Outcome::Failed(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                )),
                Err(err) => Outcome::Failed(format!("reading the body: {err}")),
            }
        }
        Err(err) => Outcome::Failed(format!("request failed: {err}")),
    }
}

/// Single-use inputs (WeChat codes) handed out to workers; empty means [`Outcome::Exhausted`].
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Vec<String>>>);

impl Pool {
    pub fn take(&self) -> Option<String> {
        self.0.lock().expect("the pool's lock").pop()
    }

    pub fn extend(&self, items: Vec<String>) {
        self.0.lock().expect("the pool's lock").extend(items);
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("the pool's lock").len()
    }

    pub fn clear(&self) {
        self.0.lock().expect("the pool's lock").clear();
    }
}
