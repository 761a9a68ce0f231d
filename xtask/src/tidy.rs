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

const MEMBERS: [&str; 9] = [
    "broker",
    "lab-postgres",
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
    // The broker knows nothing of the shop; the shared crate knows no service and no broker.
    assert_eq!(deps("broker"), none, "broker depends on no workspace crate");
    assert_eq!(
        deps("shared"),
        none,
        "saga-shared depends on no workspace crate"
    );
    assert_eq!(deps("xtask"), none, "xtask depends on no workspace crate");
    assert_eq!(
        deps("lab-postgres"),
        none,
        "lab-postgres depends on no workspace crate"
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
        // Its own tests bring a PostgreSQL server (and saga-shared's `testing`), nothing of the
        // other services.
        let test_support: BTreeSet<String> =
            ["lab-postgres".to_owned(), "saga-shared".to_owned()].into();
        assert!(
            dev_deps(service).is_subset(&test_support),
            "{service}'s tests depend on lab-postgres and saga-shared at most"
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
