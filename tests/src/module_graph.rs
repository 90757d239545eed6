//! The module-cycle check: which file module of a crate refers to which,
//! read from its `src/**/*.rs`, and the cycles in that graph.
//!
//! A module is a file module (`a.rs` or `a/mod.rs` is `crate::a`, `lib.rs`
//! is `crate`); inline modules (`mod tests { .. }`) belong to their file.
//! An edge `A -> B` is a path in `A` that names something in `B`: in a `use`
//! (groups, renames and globs included) or in code (`crate::b::f()`,
//! `super::X`, `self::c::Y`, or a name imported from a module, as in
//! `use crate::b; b::f()`). `mod b;` is no edge: a parent that declares a
//! child does not depend on it, and a child depends on its parent only when
//! it names something there. A path that names an item the target module
//! imports (`crate::Problem` where `lib.rs` has `pub use api::Problem`, or
//! `super::X` where the parent has `use crate::x::X`) is followed to where
//! the item comes from; a glob (`use super::*`) depends on the module itself.
//! The crate root is `lib.rs`, else `main.rs` (a binary only, as the CLI);
//! a `main.rs` beside a `lib.rs` is a crate of its own and is left out.
//!
//! The reading is lexical (comments, strings and char literals removed,
//! then tokens), which is enough for paths: no macro is expanded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge was seen: `file:line` and the path as written.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub file: String,
    pub line: usize,
    pub path: String,
}

/// The module graph of one crate.
#[derive(Debug, Default)]
pub struct Graph {
    /// Module path (`crate::a::b`) to its file, relative to `src/`.
    pub modules: BTreeMap<String, String>,
    /// `from -> to -> where` (the first place each edge was seen).
    pub edges: BTreeMap<String, BTreeMap<String, Evidence>>,
}

/// The module path of `file` (relative to `src/`), or `None` for a file that
/// is no module of the crate `root` (`lib.rs` or `main.rs`) starts: the
/// other `main.rs`, `bin/`.
fn module_of(file: &Path, root: &str) -> Option<String> {
    let parts: Vec<String> = file.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] && root != "main.rs" {
        return None;
    }
    let mut path = vec!["crate".to_owned()];
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !last {
            path.push(part.clone());
        } else if part == root && i == 0 || part == "mod.rs" {
        } else {
            path.push(part.strip_suffix(".rs")?.to_owned());
        }
    }
    Some(path.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

// ------------------------------------------------------------------ lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Tokens with their line numbers; comments, strings, chars and lifetimes
/// are dropped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            i += if c == '"' { 1 } else { 2 };
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if at(i) == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if (c == 'r' || ((c == 'b' || c == 'c') && at(i + 1) == 'r')) && {
            let start = if c == 'r' { i + 1 } else { i + 2 };
            let mut j = start;
            while at(j) == '#' {
                j += 1;
            }
            at(j) == '"'
        } {
            // A raw string: r"..", r#".."#, br"..".
            let mut j = if c == 'r' { i + 1 } else { i + 2 };
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| at(j + 1 + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                if chars[j] == '\n' {
                    line += 1;
                }
                j += 1;
            }
            i = j;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            let q = if c == '\'' { i } else { i + 1 };
            if at(q + 1) == '\\' {
                // '\n', '\'', '\u{..}'
                let mut j = q + 2;
                while j < chars.len() && !(chars[j] == '\'' && j > q + 2) {
                    j += 1;
                }
                i = j + 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                // A lifetime or a label: skip the quote and its name.
                let mut j = q + 1;
                while at(j).is_alphanumeric() || at(j) == '_' {
                    j += 1;
                }
                i = j;
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut j = i;
            if c == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
                j = i + 2;
            }
            let start = j;
            while at(j).is_alphanumeric() || at(j) == '_' {
                j += 1;
            }
            out.push((Tok::Ident(chars[start..j].iter().collect()), line));
            i = j;
        } else if c.is_ascii_digit() {
            while at(i).is_alphanumeric() || at(i) == '_' || at(i) == '.' && at(i + 1).is_ascii_digit() {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(c), line));
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------------ parsing

/// One file's reading: its imports and the paths it names.
#[derive(Debug, Default)]
struct FileRefs {
    /// File-level imports: name -> absolute path (`crate::a::B`).
    imports: BTreeMap<String, Vec<String>>,
    /// Absolute paths named, with their line; a glob's path ends in `*`.
    named: Vec<(Vec<String>, usize)>,
    /// Relative paths (first segment neither `crate`, `self` nor `super`),
    /// with the inline-module context they were seen in, resolved once the
    /// imports are known.
    relative: Vec<(Vec<String>, Vec<String>, usize)>,
}

/// `path` (as written, in module `context`) made absolute, or `None` when it
/// starts with a name that is not `crate`/`self`/`super`.
fn absolute(context: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut base: Vec<String> = context.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") | Some("$crate") => {
            base = vec!["crate".to_owned()];
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
            if base.is_empty() {
                return None;
            }
        }
        _ => return None,
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Parses a use tree from `toks[*i]`; pushes (prefix-joined path, alias).
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*i).map(|t| &t.0) {
            Some(Tok::Path) => *i += 1,
            Some(Tok::Ident(name)) => {
                path.push(name.clone());
                *i += 1;
                match toks.get(*i).map(|t| &t.0) {
                    Some(Tok::Path) => continue,
                    Some(Tok::Ident(kw)) if kw == "as" => {
                        *i += 1;
                        let alias = match toks.get(*i).map(|t| &t.0) {
                            Some(Tok::Ident(alias)) => alias.clone(),
                            _ => "_".to_owned(),
                        };
                        *i += 1;
                        out.push((path, Some(alias)));
                        return;
                    }
                    _ => {
                        out.push((path, None));
                        return;
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                path.push("*".to_owned());
                out.push((path, None));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.0) {
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        None => return,
                        _ => use_tree(toks, i, &path, out),
                    }
                }
            }
            _ => return,
        }
    }
}

fn read_file(module: &str, text: &str) -> FileRefs {
    let toks = lex(text);
    let file_module: Vec<String> = module.split("::").map(str::to_owned).collect();
    let mut refs = FileRefs::default();
    // Inline modules open: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        let mut context = file_module.clone();
        context.extend(inline.iter().map(|(n, _)| n.clone()));
        match tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) = (toks.get(i + 1), toks.get(i + 2)) {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 2;
                }
            }
            Tok::Ident(kw) if kw == "use" && !matches!(toks.get(i + 1), Some((Tok::Punct('<'), _))) => {
                i += 1;
                let mut trees = Vec::new();
                use_tree(&toks, &mut i, &[], &mut trees);
                for (path, alias) in trees {
                    // `use a::{self, b}` names `a` itself.
                    let mut path = path;
                    if path.last().is_some_and(|s| s == "self") {
                        path.pop();
                    }
                    let Some(last) = path.last().cloned() else { continue };
                    let name = alias.unwrap_or(last.clone());
                    match absolute(&context, &path) {
                        Some(abs) => {
                            if last != "*" && inline.is_empty() {
                                refs.imports.insert(name, abs.clone());
                            }
                            refs.named.push((abs, line));
                        }
                        None => {
                            // `use child::X` (2018 relative), or an external crate.
                            if last != "*" && inline.is_empty() {
                                refs.imports.insert(name, [vec!["?".to_owned()], path.clone()].concat());
                            }
                            refs.relative.push((context.clone(), path, line));
                        }
                    }
                }
            }
            Tok::Ident(first) if !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(Tok::Path)) => {
                // A path in code: IDENT (:: IDENT)+
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while let (Some((Tok::Path, _)), Some((Tok::Ident(next), _))) = (toks.get(j), toks.get(j + 1)) {
                    path.push(next.clone());
                    j += 2;
                }
                // A lone `crate`/`super` is a visibility (`pub(crate)`).
                if path.len() > 1 {
                    match absolute(&context, &path) {
                        Some(abs) => refs.named.push((abs, line)),
                        None => refs.relative.push((context.clone(), path, line)),
                    }
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    refs
}

// ------------------------------------------------------------------ the graph

impl Graph {
    /// Reads every `*.rs` under `src` (a crate's `src/` directory).
    pub fn read(src: &Path) -> Graph {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let root = if src.join("lib.rs").exists() { "lib.rs" } else { "main.rs" };
        let mut graph = Graph::default();
        let mut read = BTreeMap::new();
        for file in &files {
            let relative = file.strip_prefix(src).unwrap().to_path_buf();
            let Some(module) = module_of(&relative, root) else { continue };
            let text = std::fs::read_to_string(file).unwrap();
            graph.modules.insert(module.clone(), relative.display().to_string());
            read.insert(module.clone(), read_file(&module, &text));
        }
        for (module, refs) in &read {
            let mut found: Vec<(String, usize, String)> = Vec::new();
            for (path, line) in &refs.named {
                if let Some(to) = graph.target(&read, path, 0) {
                    found.push((to, *line, path.join("::")));
                }
            }
            for (context, path, line) in &refs.relative {
                // A name imported in this file, else a child module of the
                // module it was seen in.
                let resolved = match refs.imports.get(&path[0]) {
                    Some(import) if import.first().is_some_and(|s| s == "?") => {
                        // Imported by a relative `use`: `use child::X`.
                        let mut abs = context.clone();
                        abs.extend(import[1..].iter().cloned());
                        abs.extend(path[1..].iter().cloned());
                        abs
                    }
                    Some(import) => [import.clone(), path[1..].to_vec()].concat(),
                    None => [context.clone(), path.clone()].concat(),
                };
                let child = resolved[..resolved.len().min(context.len() + 1)].join("::");
                if (graph.modules.contains_key(&child) || refs.imports.contains_key(&path[0]))
                    && let Some(to) = graph.target(&read, &resolved, 0)
                {
                    found.push((to, *line, path.join("::")));
                }
            }
            let file = graph.modules[module].clone();
            for (to, line, path) in found {
                if &to != module {
                    let edges = graph.edges.entry(module.clone()).or_default();
                    edges.entry(to).or_insert_with(|| Evidence { file: file.clone(), line, path });
                }
            }
        }
        graph
    }

    /// The module an absolute path names something in: its longest prefix
    /// that is a module, following an import there by the next name.
    fn target(&self, read: &BTreeMap<String, FileRefs>, path: &[String], hops: usize) -> Option<String> {
        if path.first().is_none_or(|s| s != "crate") {
            return None;
        }
        let mut known = 1;
        for k in 1..=path.len() {
            if self.modules.contains_key(&path[..k].join("::")) {
                known = k;
            }
        }
        let module = path[..known].join("::");
        if !self.modules.contains_key(&module) {
            return None;
        }
        if let (Some(next), true) = (path.get(known), hops < 8)
            && let Some(import) = read.get(&module).and_then(|r| r.imports.get(next))
        {
            let followed = if import.first().is_some_and(|s| s == "?") {
                let mut abs: Vec<String> = module.split("::").map(str::to_owned).collect();
                abs.extend(import[1..].iter().cloned());
                abs
            } else {
                import.clone()
            };
            let followed = [followed, path[known + 1..].to_vec()].concat();
            if let Some(to) = self.target(read, &followed, hops + 1) {
                return Some(to);
            }
        }
        Some(module)
    }

    /// Every set of modules that reach each other (strongly connected,
    /// more than one module), each sorted, in order.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&String> = self.modules.keys().collect();
        let index: BTreeMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adjacency: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| self.edges.get(*n).into_iter().flatten().filter_map(|(to, _)| index.get(to).copied()).collect())
            .collect();
        // Tarjan's algorithm, iteratively.
        let n = nodes.len();
        let (mut order, mut low, mut on_stack) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
        let (mut stack, mut next, mut found) = (Vec::new(), 0, Vec::new());
        for root in 0..n {
            if order[root] != usize::MAX {
                continue;
            }
            let mut work = vec![(root, 0usize)];
            order[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(top) = work.last_mut() {
                let v = top.0;
                if let Some(&w) = adjacency[v].get(top.1) {
                    top.1 += 1;
                    if order[w] == usize::MAX {
                        order[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(order[w]);
                    }
                } else {
                    work.pop();
                    if let Some(&(parent, _)) = work.last() {
                        low[parent] = low[parent].min(low[v]);
                    }
                    if low[v] == order[v] {
                        let mut component = Vec::new();
                        loop {
                            let w = stack.pop().unwrap();
                            on_stack[w] = false;
                            component.push(nodes[w].clone());
                            if w == v {
                                break;
                            }
                        }
                        if component.len() > 1 {
                            component.sort();
                            found.push(component);
                        }
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// A shortest cycle through `start` within `members`, as a module list
    /// that starts and ends with `start`.
    fn shortest_cycle(&self, start: &str, members: &BTreeSet<&str>) -> Vec<String> {
        let mut previous: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.to_owned()]);
        while let Some(at) = queue.pop_front() {
            for to in self.edges.get(&at).into_iter().flatten().map(|(to, _)| to) {
                if !members.contains(to.as_str()) {
                    continue;
                }
                if to == start {
                    let mut cycle = vec![start.to_owned()];
                    let mut back = at.clone();
                    while back != start {
                        cycle.push(back.clone());
                        back = previous[&back].clone();
                    }
                    cycle.push(start.to_owned());
                    cycle.reverse();
                    return cycle;
                }
                if !previous.contains_key(to) {
                    previous.insert(to.clone(), at.clone());
                    queue.push_back(to.clone());
                }
            }
        }
        Vec::new()
    }

    /// `Ok` without a cycle; else a report naming each cycle, with where
    /// each of its edges was seen, and every edge inside each set.
    pub fn check(&self) -> Result<(), String> {
        let cycles = self.cycles();
        if cycles.is_empty() {
            return Ok(());
        }
        let mut report = format!("{} module cycle(s):\n", cycles.len());
        for members in &cycles {
            let set: BTreeSet<&str> = members.iter().map(String::as_str).collect();
            report.push_str(&format!("\n- {} modules reach each other: {}\n", members.len(), members.join(", ")));
            let cycle = self.shortest_cycle(&members[0], &set);
            report.push_str(&format!("  a cycle: {}\n", cycle.join(" -> ")));
            report.push_str("  edges within:\n");
            for from in members {
                for (to, seen) in self.edges.get(from).into_iter().flatten() {
                    if set.contains(to.as_str()) {
                        report
                            .push_str(&format!("    {from} -> {to}  ({}:{} `{}`)\n", seen.file, seen.line, seen.path));
                    }
                }
            }
        }
        Err(report)
    }
}

/// Fails naming every cycle among the file modules under `src`.
pub fn check_crate(src: &Path) -> Result<(), String> {
    Graph::read(src).check()
}
