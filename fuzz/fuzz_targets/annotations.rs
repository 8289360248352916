//! Annotation parsing: any annotations parse without panic, and what is understood agrees
//! with a reference reading of the value.
#![no_main]

use arbitrary::Unstructured;
use autoheal::api::annotations::{
    HealthAnnotations, ManualHealth, hook_completion, parse_bool, paused,
};
use autoheal::api::{ANNOTATION_HEALTH, ANNOTATION_PAUSED, HookResult};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(map) = autoheal_fuzz::annotations(&mut u) else {
        return;
    };
    let parsed = HealthAnnotations::parse(&map);
    let norm = |v: &str| v.trim().to_ascii_lowercase();
    match map.get(ANNOTATION_HEALTH).map(|v| norm(v)) {
        None => assert_eq!(parsed.health, None),
        Some(v) if v == "healthy" => assert_eq!(parsed.health, Some(ManualHealth::Healthy)),
        Some(v) if v == "unhealthy" => assert_eq!(parsed.health, Some(ManualHealth::Unhealthy)),
        Some(_) => {
            assert_eq!(parsed.health, None);
            assert!(parsed.errors.iter().any(|e| e.key == ANNOTATION_HEALTH));
        }
    }
    if let Some(r) = &parsed.reason {
        assert!(!r.is_empty() && r.trim() == r);
    }
    // Every error names an annotation that is present, with its value as found.
    for e in &parsed.errors {
        assert_eq!(map.get(&e.key), Some(&e.value));
        let _ = e.to_string();
    }
    match (map.get(ANNOTATION_PAUSED), paused(&map)) {
        (None, r) => assert_eq!(r, Ok(false)),
        (Some(v), Ok(p)) => assert_eq!(parse_bool(v), Some(p)),
        (Some(v), Err(e)) => {
            assert_eq!(parse_bool(v), None);
            assert_eq!(&e.value, v);
        }
    }
    for hook in ["h1", "h2", ""] {
        match hook_completion(&map, hook) {
            Ok(Some(HookResult::Continue)) | Ok(Some(HookResult::Abandon)) | Ok(None) | Err(_) => {}
        }
    }
    // Arbitrary text straight into the scalar parsers.
    if let Ok(s) = std::str::from_utf8(data) {
        let b = parse_bool(s);
        assert_eq!(b.is_some(), matches!(norm(s).as_str(), "true" | "false"));
    }
});
