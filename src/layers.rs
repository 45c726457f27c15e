//! The architecture's one rule, checked on the source itself (see the README's
//! "Architecture"): each layer imports only from the layers below it, and no two modules
//! import from each other, directly or round a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules from the bottom up; each may use only those before it.
const LAYERS: &[&str] = &[
    "domain", "store", "auth", "service", "api", "startup", "cli",
];
/// Modules any layer may use; they themselves use only `domain`.
const LEAVES: &[&str] = &[
    "config",
    "audit",
    "metrics",
    "telemetry",
    "header_deadline",
    "mail",
];

type Module = Vec<String>;

/// Every module of `src/` with its source (test modules cut off: tests may reach anywhere).
fn modules() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if !["mod", "lib", "main", "layers"].contains(&name.as_str()) {
                    module.push(name);
                }
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                let body = match text.find("#[cfg(test)]\nmod tests") {
                    Some(at) => text[..at].to_owned(),
                    None => text,
                };
                out.entry(module).or_default().push_str(&body);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &[],
        &mut out,
    );
    out
}

/// The modules `source` (in `module`) names through `crate::` and `super::` paths, each
/// as the longest known module prefix of the path.
fn uses(module: &Module, source: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    let resolve = |base: &[String], path: &str, found: &mut BTreeSet<Module>| {
        let parts: Vec<&str> = path.split("::").map(str::trim).collect();
        for len in (1..=parts.len()).rev() {
            let mut candidate = base.to_vec();
            candidate.extend(parts[..len].iter().map(|p| p.to_string()));
            if known.contains(&candidate) {
                found.insert(candidate);
                return;
            }
        }
    };
    for (root, base) in [
        ("crate::", &[][..]),
        ("super::", &module[..module.len().saturating_sub(1)]),
    ] {
        for (at, _) in source.match_indices(root) {
            let rest = &source[at + root.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let item = item.split_whitespace().next().unwrap_or_default();
                    resolve(base, item, &mut found);
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                resolve(base, rest[..end].trim_end_matches(':'), &mut found);
            }
        }
    }
    found
}

fn rank(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == top)
}

fn imports() -> BTreeMap<Module, BTreeSet<Module>> {
    let sources = modules();
    let known: BTreeSet<Module> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(m, s)| (m.clone(), uses(m, s, &known)))
        .collect()
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let mut wrong = Vec::new();
    for (from, used) in imports() {
        let Some(top) = from.first() else { continue };
        for to in used {
            let target = to.first().map(String::as_str).unwrap_or_default();
            let allowed = if target == top {
                true
            } else if LEAVES.contains(&top.as_str()) {
                target == "domain"
            } else if LEAVES.contains(&target) {
                true
            } else {
                let known = rank(top).zip(rank(target));
                assert!(
                    known.is_some(),
                    "{top} or {target} is in no layer: add it to LAYERS or LEAVES"
                );
                known.is_some_and(|(a, b)| b < a)
            };
            if !allowed {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    assert!(wrong.is_empty(), "imports from a layer above: {wrong:?}");
}

#[test]
fn no_modules_import_each_other_round_a_circle() {
    // A parent module composes its children and they may use what it defines (shared
    // types): edges between a module and its own ancestors are not circles.
    let ancestor = |a: &Module, b: &Module| a.len() < b.len() && b.starts_with(a);
    let graph: BTreeMap<Module, Vec<Module>> = imports()
        .into_iter()
        .map(|(from, used)| {
            let to = used
                .into_iter()
                .filter(|to| *to != from && !ancestor(to, &from) && !ancestor(&from, to))
                .collect();
            (from, to)
        })
        .collect();
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, Vec<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(m.clone()) {
            return None;
        }
        path.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let circle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "import circle: {circle:?}");
    }
}

#[test]
fn the_checker_sees_imports() {
    let known: BTreeSet<Module> = [
        vec!["a".to_owned()],
        vec!["a".into(), "b".into()],
        vec!["c".into()],
    ]
    .into_iter()
    .collect();
    let m = vec!["a".to_owned(), "x".to_owned()];
    let found = uses(
        &m,
        "use super::b::Thing;\nuse crate::{c, a::b};\n let x = crate::c::f();",
        &known,
    );
    assert_eq!(
        found,
        [vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]
            .into_iter()
            .collect()
    );
}
