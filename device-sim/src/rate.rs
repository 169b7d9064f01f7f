//! Telemetry rates (`1/s`, `10/s`, `1/min`) and the jittered schedule each device keeps.
//!
//! A fleet whose devices all fire on the same tick hits the broker with one burst per period
//! and nothing between; real devices drift apart. So every device starts at a random phase
//! within the first period and each interval is stretched or shrunk by a random jitter, while
//! the mean rate stays the one asked for.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// The fastest rate one device may be asked for: beyond this a "device" is a load generator,
/// and the timer resolution would distort it anyway.
const MAX_PER_SECOND: f64 = 1_000.0;

/// How often a device sends telemetry, such as `10/s` or `1/min`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    count: f64,
    unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    fn seconds(self) -> f64 {
        match self {
            Unit::Second => 1.0,
            Unit::Minute => 60.0,
            Unit::Hour => 3_600.0,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Unit::Second => "s",
            Unit::Minute => "min",
            Unit::Hour => "h",
        }
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("a rate is COUNT/UNIT, such as 1/s, 10/s or 1/min, not {0:?}")]
    Shape(String),
    #[error("the count of a rate must be a number above 0, not {0:?}")]
    Count(String),
    #[error("the unit of a rate is s, min or h, not {0:?}")]
    Unit(String),
    #[error("at most {MAX_PER_SECOND}/s per device, not {0}")]
    TooFast(String),
}

impl Rate {
    /// One message a second: the default, and slow enough for a demo to read along.
    pub const ONE_PER_SECOND: Rate = Rate {
        count: 1.0,
        unit: Unit::Second,
    };

    /// Messages per second.
    pub fn per_second(&self) -> f64 {
        self.count / self.unit.seconds()
    }

    /// The mean time between two messages.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second())
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let (count_text, unit_text) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| RateError::Shape(text.to_owned()))?;
        let count: f64 = count_text
            .trim()
            .parse()
            .ok()
            .filter(|count: &f64| count.is_finite() && *count > 0.0)
            .ok_or_else(|| RateError::Count(count_text.trim().to_owned()))?;
        let unit = match unit_text.trim() {
            "s" | "sec" | "second" => Unit::Second,
            "m" | "min" | "minute" => Unit::Minute,
            "h" | "hour" => Unit::Hour,
            other => return Err(RateError::Unit(other.to_owned())),
        };
        let rate = Rate { count, unit };
        if rate.per_second() > MAX_PER_SECOND {
            return Err(RateError::TooFast(text.trim().to_owned()));
        }
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit.symbol())
    }
}

/// When a device sends next: a random first phase, then intervals of `period ± jitter`.
#[derive(Debug, Clone)]
pub struct Schedule {
    period: Duration,
    jitter: f64,
    next: Instant,
}

impl Schedule {
    /// A schedule whose first message falls at a random point of the first period after
    /// `now`. `jitter` is the fraction (0–1) by which each interval may differ from `period`.
    pub fn start(period: Duration, jitter: f64, now: Instant, rng: &mut impl Rng) -> Schedule {
        let phase = period.mul_f64(rng.random_range(0.0..1.0));
        Schedule {
            period,
            jitter: jitter.clamp(0.0, 1.0),
            next: now + phase,
        }
    }

    /// When the next message is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// Moves on to the message after the one that was due. A device that fell more than a
    /// period behind (a stalled runtime) goes on one interval from `now` rather than sending
    /// the backlog in a burst no real sensor would produce.
    pub fn advance(&mut self, now: Instant, rng: &mut impl Rng) {
        let factor = if self.jitter > 0.0 {
            1.0 + rng.random_range(-self.jitter..=self.jitter)
        } else {
            1.0
        };
        let interval = self.period.mul_f64(factor);
        self.next += interval;
        if self.next + self.period < now {
            self.next = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn rates_per_second_minute_and_hour_parse() {
        let cases = [
            ("1/s", 1.0),
            ("10/s", 10.0),
            ("0.5/s", 0.5),
            ("1/min", 1.0 / 60.0),
            ("30/m", 0.5),
            ("2/h", 2.0 / 3600.0),
            (" 5 / sec ", 5.0),
        ];
        for (text, per_second) in cases {
            let rate: Rate = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!(
                (rate.per_second() - per_second).abs() < 1e-12,
                "{text} is {per_second}/s, not {}",
                rate.per_second()
            );
        }
    }

    #[test]
    fn a_rate_has_the_period_between_its_messages() {
        let rate: Rate = "10/s".parse().unwrap();
        assert_eq!(rate.period(), Duration::from_millis(100));
        let rate: Rate = "1/min".parse().unwrap();
        assert_eq!(rate.period(), Duration::from_secs(60));
    }

    #[test]
    fn malformed_zero_negative_and_absurd_rates_are_refused() {
        assert!(matches!("1".parse::<Rate>(), Err(RateError::Shape(_))));
        assert!(matches!("/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("0/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("-1/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("NaN/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("inf/s".parse::<Rate>(), Err(RateError::Count(_))));
        assert!(matches!("1/day".parse::<Rate>(), Err(RateError::Unit(_))));
        assert!(matches!(
            "5000/s".parse::<Rate>(),
            Err(RateError::TooFast(_))
        ));
    }

    #[test]
    fn a_rate_displays_as_it_is_written() {
        assert_eq!("10/s".parse::<Rate>().unwrap().to_string(), "10/s");
        assert_eq!("1/minute".parse::<Rate>().unwrap().to_string(), "1/min");
    }

    #[test]
    fn the_first_message_falls_within_the_first_period_at_a_random_phase() {
        let now = Instant::now();
        let period = Duration::from_secs(1);
        let phases: Vec<Duration> = (0..20)
            .map(|seed| {
                let mut rng = StdRng::seed_from_u64(seed);
                Schedule::start(period, 0.1, now, &mut rng).due() - now
            })
            .collect();
        assert!(phases.iter().all(|phase| *phase < period), "{phases:?}");
        let distinct: std::collections::HashSet<_> = phases.iter().collect();
        assert!(distinct.len() > 15, "devices start in lockstep: {phases:?}");
    }

    #[test]
    fn jittered_intervals_vary_but_keep_the_mean_rate() {
        let now = Instant::now();
        let period = Duration::from_millis(100);
        let mut rng = StdRng::seed_from_u64(7);
        let mut schedule = Schedule::start(period, 0.2, now, &mut rng);
        let first = schedule.due();
        let mut intervals = Vec::new();
        for _ in 0..1_000 {
            let before = schedule.due();
            schedule.advance(before, &mut rng);
            intervals.push(schedule.due() - before);
        }
        assert!(
            intervals
                .iter()
                .all(|i| *i >= period.mul_f64(0.8) && *i <= period.mul_f64(1.2)),
            "an interval outside period ± 20 %"
        );
        assert!(intervals.iter().any(|i| *i != intervals[0]), "no jitter");
        let mean = (schedule.due() - first).as_secs_f64() / 1_000.0;
        assert!((mean - 0.1).abs() < 0.005, "mean interval {mean} s");
    }

    #[test]
    fn a_device_far_behind_starts_afresh_instead_of_bursting() {
        let now = Instant::now();
        let period = Duration::from_millis(100);
        let mut rng = StdRng::seed_from_u64(1);
        let mut schedule = Schedule::start(period, 0.0, now, &mut rng);
        let later = schedule.due() + Duration::from_secs(10);
        schedule.advance(later, &mut rng);
        assert_eq!(schedule.due(), later + period);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let now = Instant::now();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut schedule = Schedule::start(Duration::from_secs(1), 0.1, now, &mut rng);
            (0..10)
                .map(|_| {
                    let due = schedule.due();
                    schedule.advance(due, &mut rng);
                    due
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
