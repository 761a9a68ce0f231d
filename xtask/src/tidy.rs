//! Tidy tests, in the manner of rust-analyzer's `tidy.rs`: ordinary tests that check what
//! `ARCHITECTURE.md` promises and a program can check. They run with the rest of the suite.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// The files git tracks or would track (untracked, not ignored), relative to the root; without
/// git (a source archive), every file outside build output.
fn repository_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let listed = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|out| out.status.success());
    match listed {
        Some(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(PathBuf::from)
            .filter(|p| root.join(p).is_file())
            .collect(),
        None => {
            let mut files = Vec::new();
            walk(&root, &root, &mut files);
            files
        }
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if [".git", "target", "lab-data", ".bench"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, files);
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push(relative.to_owned());
        }
    }
}

const MEMBERS: [&str; 11] = [
    "broker",
    "lab-postgres",
    "schema-registry",
    "apache-kafka",
    "saga-shared",
    "order-service",
    "payment-service",
    "inventory-service",
    "notification-service",
    "lab",
    "xtask",
];

/// The workspace crates that `manifest`'s `section` (`[dependencies]`, ...) names.
fn workspace_dependencies(manifest: &Path, section: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut in_deps = false;
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == section;
            continue;
        }
        if !in_deps {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace");
            if MEMBERS.contains(&name) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

#[test]
fn crate_dependencies_keep_the_layers() {
    let root = workspace_root();
    let manifest = |dir: &str| root.join(dir).join("Cargo.toml");
    let deps = |dir: &str| workspace_dependencies(&manifest(dir), "[dependencies]");
    let dev_deps = |dir: &str| workspace_dependencies(&manifest(dir), "[dev-dependencies]");
    let none = BTreeSet::new();
    let shared_only: BTreeSet<String> = ["saga-shared".to_owned()].into();
    // The broker knows nothing of the shop; the shared crate knows no service and no broker,
    // only the schema registry's client and rules (for the events' schemas) and, for the
    // services' own tests only (its optional `testing` feature), the PostgreSQL server those
    // tests share.
    assert_eq!(deps("broker"), none, "broker depends on no workspace crate");
    let shared_deps: BTreeSet<String> =
        ["lab-postgres".to_owned(), "schema-registry".to_owned()].into();
    assert_eq!(
        deps("shared"),
        shared_deps,
        "saga-shared depends on no workspace crate but schema-registry, and lab-postgres for `testing`"
    );
    let shared_manifest = std::fs::read_to_string(manifest("shared")).unwrap();
    assert!(
        shared_manifest
            .lines()
            .any(|l| l.starts_with("lab-postgres") && l.contains("optional = true"))
            && shared_manifest.contains(r#"testing = ["dep:reqwest", "dep:lab-postgres"]"#),
        "lab-postgres is an optional dependency of saga-shared, for `testing` only"
    );
    assert_eq!(deps("xtask"), none, "xtask depends on no workspace crate");
    assert_eq!(
        deps("lab-postgres"),
        none,
        "lab-postgres depends on no workspace crate"
    );
    assert_eq!(
        deps("apache-kafka"),
        none,
        "apache-kafka depends on no workspace crate"
    );
    // The registry is a Kafka-protocol client like any other: its tests run on the broker.
    assert_eq!(
        deps("schema-registry"),
        none,
        "schema-registry depends on no workspace crate"
    );
    // Services talk through events only: never to each other, never to the broker crate.
    for service in [
        "order-service",
        "payment-service",
        "inventory-service",
        "notification-service",
    ] {
        assert_eq!(
            deps(service),
            shared_only,
            "{service} depends on saga-shared only"
        );
        // Its own tests bring saga-shared's `testing` (a PostgreSQL server with a database per
        // test), nothing of the other services.
        assert!(
            dev_deps(service).is_subset(&shared_only),
            "{service}'s tests depend on saga-shared at most"
        );
    }
}

/// Names of things that live beside the repository, not in it.
const OUTSIDE: [&str; 3] = ["DESIGN.md", "STYLE.md", "seeds/"];

#[test]
fn nothing_refers_to_files_outside_the_repository() {
    let root = workspace_root();
    let this_file = Path::new("xtask/src/tidy.rs");
    let mut offenders = Vec::new();
    for file in repository_files() {
        let text_file = ["md", "rs", "toml", "yml", "yaml", "sh"]
            .iter()
            .any(|ext| file.extension().is_some_and(|e| e == *ext))
            || file.starts_with(".ci");
        if !text_file || file == this_file {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for name in OUTSIDE {
                if line.contains(name) {
                    offenders.push(format!("{}:{}: {name}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn markdown_links_point_at_files_that_exist() {
    let root = workspace_root();
    let mut broken = Vec::new();
    for file in repository_files() {
        if file.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let dir = root.join(&file).parent().unwrap().to_owned();
        for target in link_targets(&text) {
            let external = ["http://", "https://", "mailto:", "#"]
                .iter()
                .any(|p| target.starts_with(p));
            if external {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The targets of inline Markdown links, `[text](target)`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].trim();
            if !target.is_empty() && !target.contains(' ') {
                targets.push(target.to_owned());
            }
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn link_targets_are_found() {
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and [b](https://x.org) `[c](d e)`"),
        ["docs/a.md#x", "https://x.org"]
    );
}

/// The broker's modules from the ground up (`ARCHITECTURE.md` draws the same stack): a module
/// uses only modules on floors below its own, so the crate reads from the bottom up and has no
/// import circle. The cluster's metadata and replication will get floors of their own.
const BROKER_FLOORS: &[&[&str]] = &[
    // The ground: no other module. Zero-copy Fetch: ranges of segment files, the holes a
    // response leaves for them, sendfile.
    &["zero_copy"],
    // The wall clock, settings, the wire format, the allocator. A node's network link, which
    // the lab can cut. A bare client for tools (the broker never uses it).
    &["clock", "config", "codec", "wire_alloc", "link", "client"],
    // Segment files and partition logs.
    &["storage"],
    // The cluster's metadata: its records and the image they build.
    &["metadata"],
    // Small durable files: JSON lines, reserved producer-id blocks.
    &["jsonl", "producer_ids"],
    // The metadata quorum: the Raft log of the metadata (openraft), the active controller.
    &["quorum"],
    // Topics and their partitions, consumer groups.
    &["topics", "group"],
    // Internal topics of a cluster: a coordinator's state as records of a replicated topic.
    &["internal_topic"],
    // Committed offsets: in a file, or in the partitions of `__consumer_offsets` in a cluster.
    &["offset_store"],
    // The transaction coordinator: it decides; the broker's state writes (`txn::Participants`).
    &["txn"],
    // The broker's state: everything above, and where a transaction ends across them.
    &["broker"],
    // A follower copies its leader (Kafka's replica fetcher).
    &["replication"],
    // A node of a cluster: its topics follow the metadata; topics created through the controller.
    &["cluster"],
    // The requests, one module per API family, and their route registry.
    &["handlers"],
    // One client's connection, then the listeners and background chores.
    &["connection"],
    &["server"],
];

/// A source file of the broker as the module path it defines (`storage/log.rs`: `storage::log`,
/// `handlers/mod.rs`: `handlers`), and the module paths it names with `crate::` or `super::`,
/// its comments and `#[cfg(test)]` module left out (tests may reach anywhere).
fn module_and_uses(src: &Path, file: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut module: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    let text = std::fs::read_to_string(file).unwrap();
    // Comments (a doc may name a module above) and the tests left out.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut uses = Vec::new();
    for (at, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let preceded = code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        if preceded {
            continue; // `$crate::` in a macro, or part of a longer name
        }
        let path: Vec<String> = code[at..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or_default()
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let absolute = match path.first().map(String::as_str) {
            Some("crate") => path[1..].to_vec(),
            Some("super") => {
                // The parent of this file's module (of `handlers` for `handlers/mod.rs`'s
                // children, of the crate for top-level files).
                let parent = &module[..module.len().saturating_sub(1)];
                parent
                    .iter()
                    .cloned()
                    .chain(path[1..].iter().cloned())
                    .collect()
            }
            _ => continue,
        };
        uses.push(absolute);
    }
    // A parent module uses the children it declares.
    for line in code.lines().map(str::trim) {
        let declared = line
            .strip_prefix("pub mod ")
            .or_else(|| line.strip_prefix("pub(crate) mod "))
            .or_else(|| line.strip_prefix("mod "))
            .and_then(|rest| rest.strip_suffix(';'));
        if let Some(child) = declared {
            uses.push(module.iter().cloned().chain([child.to_owned()]).collect());
        }
    }
    (module, uses)
}

/// The file that defines the longest known prefix of `path` (a module, or an item in one).
fn defining_module(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

#[test]
fn the_broker_is_a_stack_without_import_circles() {
    let src = workspace_root().join("broker/src");
    let mut files = Vec::new();
    walk(&src, &src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .filter(|f| !["lib.rs", "main.rs"].contains(&f.to_string_lossy().as_ref()))
        .map(|f| src.join(f))
        .collect();
    let parsed: Vec<(Vec<String>, Vec<Vec<String>>)> =
        files.iter().map(|f| module_and_uses(&src, f)).collect();
    let modules: BTreeSet<Vec<String>> = parsed.iter().map(|(m, _)| m.clone()).collect();
    let floor = |top: &str| BROKER_FLOORS.iter().position(|f| f.contains(&top));
    let mut wrong = Vec::new();
    let mut arrows: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
    for (module, uses) in &parsed {
        let here = &module[0];
        let Some(own) = floor(here) else {
            wrong.push(format!(
                "{}: a module without a floor in BROKER_FLOORS",
                here
            ));
            continue;
        };
        for used in uses {
            let target = defining_module(&modules, used);
            if target.is_empty() {
                wrong.push(format!(
                    "{}: uses crate::{} (the crate root's re-exports are for other crates)",
                    module.join("::"),
                    used.join("::")
                ));
                continue;
            }
            if target == *module {
                continue;
            }
            if target[0] != *here && floor(&target[0]).is_none_or(|f| f >= own) {
                wrong.push(format!(
                    "{} (floor {own}) uses {} from a floor not below it",
                    module.join("::"),
                    used.join("::")
                ));
            }
            arrows.insert((module.clone(), target));
        }
    }
    // Inside a folder (storage, handlers) the files form a stack too: no circle.
    for start in &modules {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<Vec<String>> = vec![start.clone()];
        while let Some(m) = todo.pop() {
            for (_, to) in arrows
                .range((m.clone(), Vec::new())..)
                .take_while(|(f, _)| *f == m)
            {
                if to == start {
                    wrong.push(format!("{} is in an import circle", start.join("::")));
                }
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
    }
    wrong.dedup();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Longest function outside tests, in lines (its signature to its closing brace).
const MAX_FUNCTION_LINES: usize = 80;

/// The start of a function item: `fn`, after any of `pub`, `pub(crate)`, `async`, `const`,
/// `unsafe`; its name.
fn function_name(code: &str) -> Option<&str> {
    let mut rest = code;
    for qualifier in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    let name = rest.strip_prefix("fn ")?;
    let end = name
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(name.len());
    Some(&name[..end])
}

/// Each function of `text` (before its `#[cfg(test)]` module, outside `macro_rules!` bodies)
/// longer than [`MAX_FUNCTION_LINES`]: its line and name and length. A function ends at the
/// first line that is a closing brace at its own indentation, as rustfmt writes it.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let end_of_code = lines
        .iter()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let indent = |l: &str| l.len() - l.trim_start().len();
    let closes = |from: usize, depth: usize| {
        (from + 1..lines.len()).find(|&j| lines[j].trim_end() == format!("{}}}", " ".repeat(depth)))
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < end_of_code {
        let line = lines[i];
        let code = line.trim_start();
        if code.starts_with("macro_rules!") {
            i = closes(i, indent(line)).unwrap_or(i) + 1;
            continue;
        }
        if let Some(name) = function_name(code)
            && !code.ends_with(';')
            && let Some(end) = closes(i, indent(line))
        {
            let length = end - i + 1;
            if length > MAX_FUNCTION_LINES {
                found.push((i + 1, name.to_owned(), length));
            }
        }
        i += 1;
    }
    found
}

#[test]
fn long_functions_are_found_and_macros_and_tests_are_not() {
    let body = "    step();\n".repeat(MAX_FUNCTION_LINES);
    let long = format!("pub async fn long() {{\n{body}}}\n");
    let short = "fn short() {\n    step();\n}\n";
    let text = format!(
        "{short}{long}macro_rules! m {{\n    () => {{ fn inside() {{\n{body}    }} }};\n}}\n\
         #[cfg(test)]\nmod tests {{\n    fn also_long() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(
        long_functions(&text),
        [(4, "long".to_owned(), MAX_FUNCTION_LINES + 2)]
    );
}

/// Functions stay short enough to read in one screen: split where the steps are. Tests (their
/// files and `#[cfg(test)]` modules) are exempt: a scenario reads best in one piece.
#[test]
fn no_function_outside_tests_is_longer_than_80_lines() {
    let root = workspace_root();
    let mut offenders = Vec::new();
    for file in repository_files() {
        let in_tests = file.components().any(|c| c.as_os_str() == "tests");
        if file.extension().is_none_or(|e| e != "rs") || in_tests {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue;
        };
        for (line, name, length) in long_functions(&text) {
            offenders.push(format!(
                "{}:{line}: {name} ({length} lines)",
                file.display()
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines: {offenders:#?}"
    );
}
