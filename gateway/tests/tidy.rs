//! The shape of the gateway crate, checked like rust-analyzer's tidy tests.
//!
//! `src/lib.rs` declares the floors in its map (top floor first). Every `crate::` or
//! `super::` path in a module must name a module on a lower floor, its own children, or
//! (from a child) its parent directory's module: an import that points up fails here,
//! and so does a circle. Every module in the map must also appear in ARCHITECTURE.md,
//! and every module's doc must state its invariant (a line starting `Invariant:`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The module path of every source file: `upstream/raw.rs` is `upstream::raw`,
/// `upstream/mod.rs` is `upstream`. `lib.rs` and `main.rs` are left out (the root).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let module = join(prefix, &name);
                walk(&path, &module, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "lib" | "main" if prefix.is_empty() => continue,
                    "mod" => prefix.to_owned(),
                    _ => join(prefix, &name),
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), "", &mut out);
    out
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}::{name}")
    }
}

fn parent(module: &str) -> Option<&str> {
    module.rsplit_once("::").map(|(p, _)| p)
}

/// The floors declared in lib.rs's map, top first: the first word of each line of the
/// ```text block, nested names (indented under a directory) joined to it.
fn declared_floors() -> Vec<String> {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let block: Vec<&str> = lib
        .lines()
        .map(|l| l.strip_prefix("//!").unwrap_or(l))
        .skip_while(|l| l.trim() != "```text")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .collect();
    let mut floors = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in block {
        let indent = line.len() - line.trim_start().len();
        let Some(word) = line.split_whitespace().next() else {
            continue;
        };
        // Continuation lines of a description start in its column, past the names.
        if indent > 8 {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let name = word.trim_end_matches('/');
        let module = match stack.last() {
            Some((_, p)) => format!("{p}::{name}"),
            None => name.to_owned(),
        };
        stack.push((indent, module.clone()));
        floors.push(module);
    }
    floors
}

/// Every module path a file refers to through `crate::` or `super::`, resolved to the
/// deepest known module. Comments and string literals are skipped.
fn references(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code = strip_comments_and_strings(text);
    let bytes = code.as_bytes();
    let mut out = BTreeSet::new();
    let is_dir = |m: &str| known.iter().any(|k| parent(k) == Some(m));
    // `super` of a file module is its parent; of a directory's mod.rs, the grandparent.
    let file_is_mod = is_dir(module);
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let boundary = i == 0
            || !(bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        let base = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some((String::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let own = if file_is_mod {
                Some(module)
            } else {
                parent(module).or(Some(""))
            };
            let up = own.and_then(|m| {
                if file_is_mod {
                    parent(m).or(Some(""))
                } else {
                    Some(m)
                }
            });
            up.map(|u| (u.to_owned(), "super::".len()))
        } else {
            None
        };
        match base {
            Some((base, skip)) => {
                let end = walk_tree(&code[i + skip..], &base, known, &mut out);
                i += skip + end;
            }
            None => i += 1,
        }
    }
    out.remove(module);
    out
}

/// Reads one use tree (`a::b`, `a::{b, c::d}`, `{a, b}`) starting at `s`, records the
/// deepest known module of each leaf path, and returns how many bytes it read.
fn walk_tree(s: &str, base: &str, known: &BTreeSet<String>, out: &mut BTreeSet<String>) -> usize {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut path = base.to_owned();
    let mut deepest = (!base.is_empty()).then(|| base.to_owned());
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return i + 1;
                }
                i += walk_tree(&s[i..], &path, known, out);
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let ident = &s[start..i];
        if ident.is_empty() {
            break;
        }
        let candidate = join(&path, ident);
        if known.contains(&candidate) {
            deepest = Some(candidate.clone());
        }
        path = candidate;
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            break;
        }
    }
    if let Some(d) = deepest {
        out.insert(d);
    }
    i
}

fn strip_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// `#[cfg(test)] mod tests { ... }` blocks may use anything: cut them off.
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

#[test]
fn imports_point_down_the_declared_floors() {
    let files = modules();
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let floors = declared_floors();
    let floor_of = |m: &str| floors.iter().position(|f| f == m);
    let mut problems = Vec::new();
    for module in &known {
        if floor_of(module).is_none() {
            problems.push(format!("`{module}` is missing from lib.rs's map"));
        }
    }
    for floor in &floors {
        if !known.contains(floor) {
            problems.push(format!("lib.rs's map names `{floor}`, which is no module"));
        }
    }
    for (module, path) in &files {
        let text = fs::read_to_string(path).unwrap();
        for target in references(module, without_tests(&text), &known) {
            // A directory's module may use its children; a child may use its parent.
            let related = parent(&target) == Some(module.as_str())
                || parent(module) == Some(target.as_str())
                || target.starts_with(&format!("{module}::"));
            if related {
                continue;
            }
            // Compare the two at the level where they part: siblings by their own
            // floors, modules of different directories by their top-level ancestors.
            let (a, b) = parting(module, &target);
            match (floor_of(&a), floor_of(&b)) {
                (Some(fa), Some(fb)) if fb > fa => {}
                (Some(_), Some(_)) => problems.push(format!(
                    "`{module}` uses `{target}`, which is not on a lower floor than `{a}` in lib.rs's map"
                )),
                _ => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The two ancestors (or selves) of `a` and `b` that are siblings.
fn parting(a: &str, b: &str) -> (String, String) {
    let pa: Vec<&str> = a.split("::").collect();
    let pb: Vec<&str> = b.split("::").collect();
    let common = pa.iter().zip(&pb).take_while(|(x, y)| x == y).count();
    (
        pa[..=common.min(pa.len() - 1)].join("::"),
        pb[..=common.min(pb.len() - 1)].join("::"),
    )
}

/// The client side reaches clients only through the trait it defines (`ClientLink`):
/// no server-side rmcp type appears in `upstream/` outside its tests.
#[test]
fn upstream_knows_no_server_side_type() {
    let mut found = Vec::new();
    for (module, path) in modules() {
        if module != "upstream" && !module.starts_with("upstream::") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let code = strip_comments_and_strings(without_tests(&text));
        for name in ["RoleServer", "streamable_http_server", "sse_resume"] {
            if code.contains(name) {
                found.push(format!("`{module}` names `{name}`"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_module_in_the_map_is_in_architecture_md() {
    let architecture =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .unwrap();
    let missing: Vec<String> = declared_floors()
        .into_iter()
        .filter(|m| {
            let file = m.replace("::", "/");
            let leaf = m.rsplit("::").next().unwrap();
            ![
                format!("`{file}.rs`"),
                format!("`{file}/`"),
                format!("`{m}`"),
                format!("`{leaf}.rs`"),
            ]
            .iter()
            .any(|needle| architecture.contains(needle.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md never names: {missing:?}"
    );
}

#[test]
fn every_module_states_its_invariant() {
    let undocumented: Vec<String> = modules()
        .into_iter()
        .filter(|(_, path)| {
            let text = fs::read_to_string(path).unwrap();
            let doc: String = text
                .lines()
                .take_while(|l| l.starts_with("//!"))
                .collect::<Vec<_>>()
                .join("\n");
            !doc.contains("Invariant:")
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        undocumented.is_empty(),
        "no `Invariant:` line in the module doc of {undocumented:?}"
    );
}
