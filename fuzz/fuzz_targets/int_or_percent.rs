//! Int-or-percent parsing through `Limits::of`: any `maxUnhealthy` / `maxInFlight` (ints at
//! the extremes, percentages out of range, text that is neither) and any sizes resolve to
//! sane limits, and what cannot be understood is reported.
#![no_main]

use arbitrary::Unstructured;
use autoheal::plan::replacement::Limits;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut spec) = autoheal_fuzz::spec(&mut u) else {
        return;
    };
    // Half the time, raw text for both values.
    if let (Ok(true), Ok(a), Ok(b)) = (
        u.arbitrary::<bool>(),
        u.arbitrary::<String>(),
        u.arbitrary::<String>(),
    ) {
        spec.replacement.max_unhealthy = IntOrString::String(a);
        spec.replacement.max_in_flight = IntOrString::String(b);
    }
    let l = Limits::of(&spec);
    let desired = spec.effective_desired().max(0);
    assert_eq!(l.desired, desired);
    assert!(l.max_in_flight >= 0);
    if desired > 0 {
        assert!(l.max_in_flight >= 1);
    } else {
        assert_eq!(l.max_in_flight, 0);
    }
    if let Some(m) = l.max_unhealthy {
        assert!(m >= 0);
    }
    assert!((0..=desired).contains(&l.min_healthy));
    assert!((0..=desired).contains(&l.terminate_then_launch_room));
    assert!(l.max_with_surge >= l.max_in_flight);
    assert!(l.max_consecutive_failures >= 1);
    // A percentage resolves to at most desired (rounded up for maxInFlight).
    let percent = |v: &IntOrString| matches!(v, IntOrString::String(s) if s.trim().ends_with('%'));
    if percent(&spec.replacement.max_in_flight) && l.problems.is_empty() {
        assert!(l.max_in_flight <= desired.max(1));
    }
    if let Some(m) = l.max_unhealthy
        && percent(&spec.replacement.max_unhealthy)
        && l.problems.is_empty()
    {
        assert!(m <= desired);
    }
    assert!(l.problems.len() <= 2);
    for p in &l.problems {
        assert!(!p.is_empty());
    }
});
