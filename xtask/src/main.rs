//! `cargo xtask`: project chores (the alias is in `.cargo/config.toml`).
//!
//! - `cargo xtask test [NEXTEST ARGS]`: checks every prerequisite of the test suite, installs
//!   what is missing where it can (Debian packages with apt-get as root, Python packages with
//!   pip, cargo-nextest with cargo), stops with the exact command to run where it cannot, builds
//!   the Java parts with Maven (Apache Kafka's jars, the Java client suite, the Spring and Streams
//!   examples: `MAVEN_PROJECTS`), checks the crates' docs (`cargo doc`, a broken intra-doc
//!   link is an error), builds the tests, starts one PostgreSQL for the whole suite (`lab
//!   test-postgres`, passed to the tests as `LAB_TEST_POSTGRES_URL`), then runs `cargo nextest
//!   run --workspace [NEXTEST ARGS]`.
//! - `cargo xtask setup`: the same checks and installs, without running the tests.
//! - `cargo xtask doctor`: only reports what is there and what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[cfg(test)]
mod tidy;

/// How a missing prerequisite is installed.
#[derive(Debug, Clone, Copy)]
enum Install {
    /// A Debian package (`apt-get install`), needs root.
    Apt(&'static str),
    /// A Python package (`python3 -m pip install`).
    Pip(&'static str),
    /// A crate with a binary (`cargo install --locked`).
    Cargo(&'static str),
}

impl Install {
    fn command(self) -> String {
        match self {
            Install::Apt(pkg) => format!("apt-get install -y {pkg}"),
            Install::Pip(spec) => format!("python3 -m pip install '{spec}'"),
            Install::Cargo(krate) => format!("cargo install {krate} --locked"),
        }
    }
}

/// One thing the test suite needs.
struct Prerequisite {
    name: &'static str,
    why: &'static str,
    present: fn() -> bool,
    install: Install,
}

const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        name: "cargo-nextest",
        why: "the test runner",
        present: || succeeds(Command::new(cargo()).args(["nextest", "--version"])),
        install: Install::Cargo("cargo-nextest"),
    },
    Prerequisite {
        name: "PostgreSQL server binaries",
        why: "the tests start a throwaway PostgreSQL",
        present: || server_binary("initdb").is_some() && server_binary("postgres").is_some(),
        install: Install::Apt("postgresql"),
    },
    Prerequisite {
        name: "postgres user",
        why: "as root, PostgreSQL runs as this user",
        present: || !is_root() || succeeds(Command::new("id").arg("postgres")),
        install: Install::Apt("postgresql"),
    },
    Prerequisite {
        name: "setpriv",
        why: "runs PostgreSQL as postgres, stopped with the process that started it",
        present: || on_path("setpriv"),
        install: Install::Apt("util-linux"),
    },
    Prerequisite {
        name: "kcat",
        why: "a C client the broker and the tutorial are tested with",
        present: || on_path("kcat"),
        install: Install::Apt("kcat"),
    },
    Prerequisite {
        name: "ip (iproute2)",
        why: "as root, the Jepsen-style tests cut a node off in network namespaces of its own",
        present: || !is_root() || on_path("ip"),
        install: Install::Apt("iproute2"),
    },
    Prerequisite {
        name: "RapidJSON headers",
        why: "librdkafka's tests of its statistics JSON (built by cargo xtask setup) need them",
        present: || Path::new("/usr/include/rapidjson/document.h").is_file(),
        install: Install::Apt("rapidjson-dev"),
    },
    Prerequisite {
        name: "curl",
        why: "the tutorial's commands use it",
        present: || on_path("curl"),
        install: Install::Apt("curl"),
    },
    Prerequisite {
        name: "chromium",
        why: "the dashboard is tested in a real browser",
        present: || on_path("chromium"),
        install: Install::Apt("chromium"),
    },
    Prerequisite {
        name: "chromedriver",
        why: "drives Chromium for the dashboard test",
        present: || on_path("chromedriver"),
        install: Install::Apt("chromium-driver"),
    },
    Prerequisite {
        name: "a JDK 17 or newer (javac)",
        why: "runs Apache Kafka 4, the Java client suite and the Spring and Streams examples, \
              and compiles them",
        present: jdk_17_or_newer,
        install: Install::Apt("default-jdk-headless"),
    },
    Prerequisite {
        name: "mvn",
        why: "fetches Apache Kafka's jars and builds the Java parts from Maven Central",
        present: || succeeds(Command::new("mvn").arg("--version")),
        install: Install::Apt("maven"),
    },
    Prerequisite {
        name: "python3",
        why: "runs the kafka-python compatibility test",
        present: || on_path("python3"),
        install: Install::Apt("python3"),
    },
    Prerequisite {
        name: "kafka-python",
        why: "a second, pure-Python Kafka client the broker is tested with",
        present: || succeeds(Command::new("python3").args(["-c", "import kafka"])),
        install: Install::Pip("kafka-python==3.0.12"),
    },
    Prerequisite {
        name: "confluent-kafka (with its schema registry client)",
        why: "Confluent's own client library judges the lab's schema registry",
        present: || {
            succeeds(
                Command::new("python3")
                    .args(["-c", "import confluent_kafka.schema_registry.json_schema"]),
            )
        },
        install: Install::Pip("confluent-kafka[schemaregistry,json]==2.16.2"),
    },
    Prerequisite {
        name: "openapi-spec-validator",
        why: "checks each service's OpenAPI document",
        present: || succeeds(Command::new("python3").args(["-c", "import openapi_spec_validator"])),
        install: Install::Pip("openapi-spec-validator==0.9.0"),
    },
];

/// Maven projects built before the tests run (`mvn -B -q -f <dir>/pom.xml package -DskipTests`):
/// each leaves what the tests run in its `target/`. Maven is incremental and keeps what it
/// downloads in `~/.m2`, so only the first run fetches anything.
const MAVEN_PROJECTS: &[(&str, &str)] = &[
    (
        "compat/kafka",
        "Apache Kafka's jars: the reference broker and its command-line tools",
    ),
    (
        "compat/java",
        "the Java client suite (kafka-clients), run by broker/tests/it/java_client.rs",
    ),
    (
        "examples/spring",
        "the Spring Boot + Spring Kafka example, run by lab/tests/spring.rs",
    ),
    (
        "examples/streams",
        "the Kafka Streams example, run by lab/tests/streams.rs",
    ),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    match task {
        "test" => {
            warn_if_disk_is_short();
            match setup()
                .and_then(|()| build_java())
                .and_then(|()| build_librdkafka_tests())
                .and_then(|()| check_docs())
            {
                Ok(()) => run_tests(rest),
                Err(message) => fail(&message),
            }
        }
        "setup" => match setup()
            .and_then(|()| build_java())
            .and_then(|()| build_librdkafka_tests())
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(&message),
        },
        "doctor" => {
            let missing = report();
            if missing.is_empty() {
                println!("everything the tests need is installed");
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => {
            println!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 test [ARGS]  set up the test prerequisites, then `cargo nextest run --workspace [ARGS]`\n  \
                 setup        check and install the test prerequisites, build the Java parts and librdkafka's tests\n  \
                 doctor       report which prerequisites are missing, change nothing"
            );
            if task == "help" || task == "--help" || task == "-h" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("xtask: {message}");
    ExitCode::FAILURE
}

/// Prints one line per prerequisite; returns the missing ones.
fn report() -> Vec<&'static Prerequisite> {
    let mut missing = Vec::new();
    for p in PREREQUISITES {
        if (p.present)() {
            println!("  ok       {} ({})", p.name, p.why);
        } else {
            println!("  missing  {} ({}): {}", p.name, p.why, p.install.command());
            missing.push(p);
        }
    }
    missing
}

/// What a fresh build of the suite writes under `target/` (measured: 4.0 GB on 2026-12-06), with
/// room to spare. A run that fills the disk fails late, at a link, with a bus error.
const DISK_NEEDED_GB: u64 = 6;

/// Warns (does not stop: a warm `target/` needs far less) when the disk that holds `target/` has
/// less free space than a fresh build needs.
fn warn_if_disk_is_short() {
    if let Some(free_gb) = free_disk_gb().filter(|gb| *gb < DISK_NEEDED_GB) {
        println!(
            "xtask: warning: {free_gb} GB free where target/ is; a fresh build of the suite needs about {DISK_NEEDED_GB} GB"
        );
    }
}

/// Free space on the disk that holds `target/`, from `df`.
fn free_disk_gb() -> Option<u64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.clone(), PathBuf::from);
    let at = if target.exists() { target } else { root };
    let out = Command::new("df").args(["-Pk"]).arg(&at).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let free_kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(free_kb / (1024 * 1024))
}

/// Installs what is missing (apt-get only as root), then checks again.
fn setup() -> Result<(), String> {
    let missing: Vec<&Prerequisite> = PREREQUISITES.iter().filter(|p| !(p.present)()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: the test suite needs:");
    for p in &missing {
        println!("  {} ({})", p.name, p.why);
    }
    let mut apt: Vec<&str> = missing
        .iter()
        .filter_map(|p| match p.install {
            Install::Apt(pkg) => Some(pkg),
            _ => None,
        })
        .collect();
    apt.dedup();
    if !apt.is_empty() {
        if !is_root() {
            return Err(format!(
                "installing Debian packages needs root; run:\n  sudo apt-get update && sudo apt-get install -y {}\nthen run this command again",
                apt.join(" ")
            ));
        }
        let quiet_env = [("DEBIAN_FRONTEND", "noninteractive")];
        step(
            "apt-get update",
            Command::new("apt-get")
                .args(["update", "-qq"])
                .envs(quiet_env),
        )?;
        step(
            &format!("apt-get install -y {}", apt.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&apt)
                .envs(quiet_env),
        )?;
    }
    // After apt: python3 may be new.
    for p in missing.iter().filter(|p| !(p.present)()) {
        match p.install {
            Install::Apt(_) => {}
            Install::Pip(spec) => step(
                &p.install.command(),
                Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", spec])
                    .env("PIP_ROOT_USER_ACTION", "ignore"),
            )?,
            Install::Cargo(krate) => {
                // Minutes of compiling: let its progress show.
                println!("xtask: {}", p.install.command());
                let ok = Command::new(cargo())
                    .args(["install", krate, "--locked"])
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("`{}` failed", p.install.command()));
                }
            }
        }
    }
    let still: Vec<String> = PREREQUISITES
        .iter()
        .filter(|p| !(p.present)())
        .map(|p| format!("{}: {}", p.name, p.install.command()))
        .collect();
    if still.is_empty() {
        println!("xtask: all test prerequisites are installed");
        Ok(())
    } else {
        Err(format!(
            "still missing after installing:\n  {}",
            still.join("\n  ")
        ))
    }
}

/// Builds every project of [`MAVEN_PROJECTS`].
fn build_java() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cached = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".m2/repository/org/apache/kafka"))
        .is_some_and(|dir| dir.is_dir());
    if !cached {
        println!(
            "xtask: the first Maven build downloads about 260 MB from Maven Central into ~/.m2 \
             (a few minutes)"
        );
    }
    for (dir, why) in MAVEN_PROJECTS {
        let pom = root.join(dir).join("pom.xml");
        step(
            &format!("mvn -B -q -f {dir}/pom.xml package -DskipTests ({why})"),
            Command::new("mvn")
                .args(["-B", "-q", "-f"])
                .arg(&pom)
                .args(["package", "-DskipTests"]),
        )?;
    }
    Ok(())
}

/// Builds librdkafka's own test suite (its `tests/test-runner`) from the librdkafka sources that
/// `rdkafka-sys` vendors (the version the workspace builds), once per version, into
/// `target/librdkafka-tests/<version>`: `broker/tests/it/librdkafka_suite.rs` runs its tests
/// against a three-node cluster.
fn build_librdkafka_tests() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let version = locked_version(&root, "rdkafka-sys")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = target.join("librdkafka-tests").join(&version);
    if out.join("tests/test-runner").is_file() {
        return Ok(());
    }
    let source = match vendored_librdkafka(&version) {
        Some(source) => source,
        None => {
            step(
                "cargo fetch (the librdkafka sources)",
                Command::new(cargo()).arg("fetch").current_dir(&root),
            )?;
            vendored_librdkafka(&version).ok_or("cargo fetch brought no rdkafka-sys sources")?
        }
    };
    println!("xtask: building librdkafka's test suite (once, a few minutes)");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.parent().expect("a parent")).map_err(|e| e.to_string())?;
    step(
        &format!("cp -a {} {}", source.display(), out.display()),
        Command::new("cp").arg("-a").arg(&source).arg(&out),
    )?;
    step(
        "./configure (librdkafka, no TLS, SASL, curl or zstd)",
        Command::new("./configure")
            .args([
                "--disable-ssl",
                "--disable-gssapi",
                "--disable-curl",
                "--disable-zstd",
            ])
            .current_dir(&out),
    )?;
    step(
        "make libs (librdkafka)",
        Command::new("make").args(["-j2", "libs"]).current_dir(&out),
    )?;
    step(
        "make test-runner (librdkafka's tests)",
        Command::new("make")
            .args(["-j2", "test-runner"])
            .current_dir(out.join("tests")),
    )
}

/// The version of `package` in the workspace's Cargo.lock.
fn locked_version(root: &Path, package: &str) -> Result<String, String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).map_err(|e| e.to_string())?;
    let name = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == name {
            let version = lines.next().unwrap_or_default();
            return version
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned)
                .ok_or_else(|| format!("no version of {package} in Cargo.lock"));
        }
    }
    Err(format!("{package} is not in Cargo.lock"))
}

/// The librdkafka sources of `rdkafka-sys` `version` in cargo's registry, if fetched.
fn vendored_librdkafka(version: &str) -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let registries = std::fs::read_dir(home.join("registry/src")).ok()?;
    registries
        .filter_map(Result::ok)
        .map(|r| r.path().join(format!("rdkafka-sys-{version}/librdkafka")))
        .find(|p| p.join("tests/test.c").is_file())
}

/// Runs `what`, showing its output only if it fails; failing with the command to run by hand.
fn step(what: &str, cmd: &mut Command) -> Result<(), String> {
    println!("xtask: {what}");
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{what}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run `{what}`: {e}")),
    }
}

/// Builds the workspace's docs with broken intra-doc links as errors: a doc that names an item
/// that is gone fails the test command.
fn check_docs() -> Result<(), String> {
    step(
        "cargo doc --workspace --no-deps (broken intra-doc links are errors)",
        Command::new(cargo())
            .args(["doc", "--workspace", "--no-deps", "--quiet"])
            .env(
                "RUSTDOCFLAGS",
                "-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links",
            ),
    )
}

fn run_tests(args: &[String]) -> ExitCode {
    // `-p <package>` narrows the run (cargo would ignore it next to `--workspace`).
    let packages_named = args.iter().any(|a| {
        a == "--package"
            || a.starts_with("--package=")
            || (a.starts_with("-p") && !a.starts_with("--"))
    });
    let scope: &[&str] = if packages_named {
        &[]
    } else {
        &["--workspace"]
    };
    // Built first (with the `lab` binary, whatever the scope), so that the suite's PostgreSQL
    // can start from it.
    let mut build = Command::new(cargo());
    build
        .args(["nextest", "run", "--no-run"])
        .args(scope)
        .args(args);
    if packages_named {
        build.args(["-p", "lab"]);
    }
    let built = build.status();
    if !built.is_ok_and(|s| s.success()) {
        return fail("the tests do not build (see above)");
    }
    let postgres = match SuitePostgres::start() {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let status = Command::new(cargo())
        .args(["nextest", "run"])
        .args(scope)
        .args(args)
        .env(SHARED_TEST_SERVER, &postgres.url)
        .status();
    drop(postgres);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(e) => fail(&format!("cannot run cargo nextest: {e}")),
    }
}

/// The variable that hands the tests the suite's PostgreSQL (`lab_postgres::SHARED_TEST_SERVER`).
const SHARED_TEST_SERVER: &str = "LAB_TEST_POSTGRES_URL";

/// One PostgreSQL server for the whole suite (`lab test-postgres`): every test takes a fresh
/// database on it instead of starting a server of its own. It stops when this is dropped (its
/// standard input closes).
struct SuitePostgres {
    child: std::process::Child,
    url: String,
}

impl SuitePostgres {
    fn start() -> Result<Self, String> {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let lab = target.join("debug").join("lab");
        let mut child = Command::new(&lab)
            .arg("test-postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", lab.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .map_err(|e| format!("reading the suite's PostgreSQL URL: {e}"))?;
        let url = line.trim().to_owned();
        if url.is_empty() {
            let _ = child.wait();
            return Err("the suite's PostgreSQL did not start (see above)".into());
        }
        println!("xtask: one PostgreSQL for the suite (lab test-postgres)");
        Ok(Self { child, url })
    }
}

impl Drop for SuitePostgres {
    fn drop(&mut self) {
        // Closing its standard input stops it, and it removes its files.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The cargo that runs this task.
fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A PostgreSQL server program on PATH or in Debian's `/usr/lib/postgresql/<version>/bin`
/// (where the lab looks too).
fn server_binary(program: &str) -> Option<PathBuf> {
    find_on_path(program).or_else(|| {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin").join(program))
            .find(|p| Path::new(p).is_file())
    })
}

/// Whether `javac` is on PATH and at least version 17 (Kafka 4 and Spring Boot 4 need it; a JRE
/// alone cannot build the Maven projects).
fn jdk_17_or_newer() -> bool {
    let Ok(out) = Command::new("javac").arg("-version").output() else {
        return false;
    };
    // "javac 17.0.15" (on stdout since JDK 9, on stderr before).
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major >= 17)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
