//! The `podsim.autoheal.dev/behavior` annotation on Pods.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a simulated Pod does, chosen by the Pod annotation
/// [`BEHAVIOR_ANNOTATION`](crate::BEHAVIOR_ANNOTATION).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behavior {
    /// `healthy` (also: no annotation, empty value): every path answers HTTP 200.
    #[default]
    Healthy,
    /// `fail`: every path answers HTTP 503.
    Fail,
    /// `hang`: connections are accepted but requests are never answered.
    Hang,
    /// `refuse`: nothing listens on the Pod's ports (connection refused).
    Refuse,
    /// `crash`: the containers exit with code 1 and the Pod becomes `Failed`.
    /// This is terminal: a Failed Pod never runs again, whatever the annotation says later.
    Crash,
    /// `slow-start=<seconds>`: the Pod stays `Pending` (bound, no IP, not ready) for this
    /// long after podsim first saw it, then runs as `healthy`.
    SlowStart(Duration),
}

/// An annotation value that is not one of the [`Behavior`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownBehavior(
    /// The value as it was found.
    pub String,
);

impl fmt::Display for UnknownBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown podsim behavior {:?} (expected healthy, fail, hang, refuse, crash or slow-start=<seconds>)",
            self.0
        )
    }
}

impl std::error::Error for UnknownBehavior {}

impl FromStr for Behavior {
    type Err = UnknownBehavior;

    /// Parses an annotation value; surrounding whitespace and ASCII case are ignored.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let v = value.trim().to_ascii_lowercase();
        let unknown = || UnknownBehavior(value.to_string());
        Ok(match v.as_str() {
            "" | "healthy" => Behavior::Healthy,
            "fail" => Behavior::Fail,
            "hang" => Behavior::Hang,
            "refuse" => Behavior::Refuse,
            "crash" => Behavior::Crash,
            _ => {
                let secs = v.strip_prefix("slow-start=").ok_or_else(unknown)?.trim();
                let secs = secs.strip_suffix('s').unwrap_or(secs);
                let secs: f64 = secs.parse().map_err(|_| unknown())?;
                if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
                    return Err(unknown());
                }
                Behavior::SlowStart(Duration::from_secs_f64(secs))
            }
        })
    }
}

impl Behavior {
    /// Reads the behavior from an optional annotation value. An unknown value yields
    /// `Healthy` together with the parse error (for the caller to log; never fatal).
    pub fn from_annotation(value: Option<&str>) -> (Behavior, Option<UnknownBehavior>) {
        match value.map(str::parse) {
            None => (Behavior::Healthy, None),
            Some(Ok(b)) => (b, None),
            Some(Err(e)) => (Behavior::Healthy, Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_value() {
        assert_eq!("healthy".parse(), Ok(Behavior::Healthy));
        assert_eq!("".parse(), Ok(Behavior::Healthy));
        assert_eq!("fail".parse(), Ok(Behavior::Fail));
        assert_eq!(" Hang ".parse(), Ok(Behavior::Hang));
        assert_eq!("refuse".parse(), Ok(Behavior::Refuse));
        assert_eq!("crash".parse(), Ok(Behavior::Crash));
        assert_eq!(
            "slow-start=3".parse(),
            Ok(Behavior::SlowStart(Duration::from_secs(3)))
        );
        assert_eq!(
            "slow-start=1.5s".parse(),
            Ok(Behavior::SlowStart(Duration::from_millis(1500)))
        );
        assert_eq!(
            "slow-start=0".parse(),
            Ok(Behavior::SlowStart(Duration::ZERO))
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for v in [
            "explode",
            "slow-start",
            "slow-start=",
            "slow-start=-1",
            "slow-start=abc",
            "slow-start=NaN",
            "slow-start=inf",
            "slow-start=1e300",
            "fail;hang",
        ] {
            assert!(v.parse::<Behavior>().is_err(), "{v:?} should not parse");
        }
    }

    #[test]
    fn unknown_annotation_falls_back_to_healthy() {
        assert_eq!(Behavior::from_annotation(None), (Behavior::Healthy, None));
        let (b, err) = Behavior::from_annotation(Some("bogus"));
        assert_eq!(b, Behavior::Healthy);
        assert!(err.unwrap().to_string().contains("bogus"));
        assert_eq!(
            Behavior::from_annotation(Some("fail")),
            (Behavior::Fail, None)
        );
    }
}
