//! The shape of the source: no import circles between the operator's modules.
//!
//! Every file under `src/` is a module; a file depends on another when it names it (`use
//! crate::…`, `super::…`, a child module's path, or any path through them). `pub use`
//! re-exports are facades, not dependencies, and `#[cfg(test)]` code is left out. A submodule
//! using its own parent (`super::`) is part of it; circles between siblings or unrelated
//! modules are what the test refuses. The test
//! fails, naming the circle, when the graph has a cycle (`ARCH_DEBUG=1` prints the graph).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `src/lib.rs` and `src/main.rs` → `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".into()
    } else {
        parts.join("::")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.trim().trim_end_matches("::").to_string()];
    };
    let prefix = &path[..open];
    let inner = &path[open + 1..path.rfind('}').unwrap_or(path.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "self")
        .flat_map(|item| expand(&format!("{prefix}{item}")))
        .collect()
}

/// The code of a file without its `#[cfg(test)]` part and comments.
fn code_of(text: &str) -> String {
    let text = text.replace("#[cfg(test)]\nmod tests;", "");
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    // Re-exports (`pub use`, possibly over several lines) are facades: left out entirely.
    let mut in_reexport = false;
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            if t.starts_with("pub use ") || t.starts_with("pub(crate) use ") {
                in_reexport = !t.contains(';');
                return false;
            }
            if in_reexport {
                in_reexport = !t.contains(';');
                return false;
            }
            true
        })
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths a file names, resolved to absolute `a::b::item` form.
fn references(module: &str, code: &str, children: &BTreeSet<String>) -> Vec<String> {
    let parent = match module.rfind("::") {
        Some(i) => module[..i].to_string(),
        None => "crate".to_string(),
    };
    let absolute = |rel: &str, base: &str| {
        if base == "crate" {
            rel.to_string()
        } else {
            format!("{base}::{rel}")
        }
    };
    let mut out = Vec::new();
    // `use` statements (possibly over several lines), re-exports left out.
    let lines: Vec<&str> = code.lines().collect();
    let mut n = 0;
    while n < lines.len() {
        let line = lines[n].trim_start();
        let is_reexport = line.starts_with("pub use ") || line.starts_with("pub(crate) use ");
        if !(line.starts_with("use ") || is_reexport) {
            n += 1;
            continue;
        }
        let mut stmt = String::new();
        while n < lines.len() {
            stmt.push_str(lines[n]);
            n += 1;
            if stmt.contains(';') {
                break;
            }
        }
        if is_reexport {
            continue;
        }
        let body = stmt.trim_start().trim_start_matches("use ");
        let mut body: String = body[..body.find(';').unwrap_or(body.len())]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (from, to) in [
            (":: ", "::"),
            (" ::", "::"),
            ("{ ", "{"),
            (" }", "}"),
            (", ", ","),
        ] {
            body = body.replace(from, to);
        }
        for path in expand(&body) {
            let path = path.split(" as ").next().unwrap().to_string();
            if let Some(p) = path.strip_prefix("crate::") {
                out.push(p.to_string());
            } else if let Some(p) = path.strip_prefix("super::") {
                out.push(absolute(p, &parent));
            } else if let Some(p) = path.strip_prefix("self::") {
                out.push(absolute(p, module));
            } else if children.iter().any(|c| path.starts_with(&format!("{c}::"))) {
                out.push(absolute(&path, module));
            }
        }
    }
    // Paths in code: `crate::a::b`, `super::a`, and child modules `child::item`.
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let path = code[start..i].trim_end_matches(':');
            if let Some(p) = path.strip_prefix("crate::") {
                out.push(p.to_string());
            } else if let Some(p) = path.strip_prefix("super::") {
                out.push(absolute(p, &parent));
            } else if let Some(first) = path.split("::").next()
                && path.contains("::")
                && children.contains(first)
            {
                out.push(absolute(path, module));
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn no_import_circles_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n != "main.rs" && n != "tests.rs")
        })
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    assert!(modules.contains_key("controller::group"), "{modules:?}");
    let children_of = |m: &str| -> BTreeSet<String> {
        modules
            .keys()
            .filter_map(|k| {
                let rest = if m == "crate" {
                    Some(k.as_str())
                } else {
                    k.strip_prefix(&format!("{m}::"))
                }?;
                (!rest.contains("::") && rest != "crate").then(|| rest.to_string())
            })
            .collect()
    };
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| modules.contains_key(m))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for reference in references(module, &code, &children_of(module)) {
            // A submodule naming its own ancestors (`super::` types of its parent, the
            // idiomatic facade-and-parts layout) is part of that module, not a second one.
            let ancestor = |t: &str| t == "crate" || module.starts_with(&format!("{t}::"));
            if let Some(target) = resolve(&reference)
                && target != *module
                && !ancestor(&target)
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    if std::env::var("ARCH_DEBUG").is_ok() {
        eprintln!("{edges:#?}");
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let from = stack.iter().position(|s| s == m).unwrap();
                let mut cycle = stack[from..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in modules.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!(
                "import circle: {}\nall edges: {edges:#?}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_checker_finds_a_circle() {
    // The parser itself: a use of a sibling through `super::`, and a child's path.
    let children: BTreeSet<String> = ["group".to_string()].into();
    let refs = references(
        "controller",
        "use super::api::{Instance, names::LABEL_GROUP};\nfn f() { group::reconcile(); crate::plan::group::plan(); }",
        &children,
    );
    assert!(refs.contains(&"api::Instance".to_string()), "{refs:?}");
    assert!(
        refs.contains(&"api::names::LABEL_GROUP".to_string()),
        "{refs:?}"
    );
    assert!(
        refs.contains(&"controller::group::reconcile".to_string()),
        "{refs:?}"
    );
    assert!(refs.contains(&"plan::group::plan".to_string()), "{refs:?}");
    let reexport = references("api", "pub use instance::*;", &["instance".into()].into());
    assert!(reexport.is_empty(), "re-exports are facades: {reexport:?}");
}
