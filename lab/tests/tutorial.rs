//! Runs the tutorial, each edition from its first chapter to its last, against one real lab, as a
//! reader would in one terminal, so neither edition can rot.
//!
//! Every ` ```sh ` block is run, in order, in one bash session (`set -euo pipefail`: variables
//! carry over, and a failing command fails the test). A block followed by an ` ```output ` block
//! must print that output: each line is compared, with placeholders for what changes from run to
//! run (`<uuid>`, `<n>` a number, `<word>` text without spaces, `<any>` any text, and a line `...`
//! for any number of lines). A chapter that starts a lab says how, in a comment
//! `<!-- tutorial: lab --services order,notification -->` (or `lab --nodes 3`): the chapters from
//! it to the next such one run against a fresh lab started that way. The tutorial uses the
//! standard addresses; the test starts the lab on free ports, points the commands at them, and
//! puts this build's `lab` binary first on PATH.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use lab::dashboard;
use lab::{Lab, LabClient, LabConfig, Service};

/// The chapters, in reading order (the same file names in each edition).
const CHAPTERS: [&str; 7] = [
    "1-first-event.md",
    "2-full-chain.md",
    "3-consumer-groups.md",
    "4-failures.md",
    "5-exactly-once.md",
    "6-replication.md",
    "7-schemas.md",
];

/// One command block and the output it must print, if the chapter shows it.
#[derive(Debug)]
struct Step {
    chapter: String,
    command: String,
    expected: Option<String>,
}

/// The ` ```sh ` blocks of `markdown`, each with the ` ```output ` block right after it.
fn steps(chapter: &str, markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut block: Option<(String, String)> = None;
    // Whether only blank lines were seen since the last sh block closed.
    let mut after_sh = false;
    for line in markdown.lines() {
        let fence = line.trim_start();
        match &mut block {
            None if fence.starts_with("```") => {
                let kind = fence.trim_start_matches('`').trim().to_owned();
                block = Some((kind, String::new()));
            }
            None => {
                if let Some(shot) = screenshot(line) {
                    steps.push(Step {
                        chapter: chapter.to_owned(),
                        command: shot,
                        expected: None,
                    });
                }
                if !line.trim().is_empty() {
                    after_sh = false;
                }
            }
            Some(_) if fence.starts_with("```") => {
                let (kind, text) = block.take().expect("in a block");
                match kind.as_str() {
                    "sh" => {
                        steps.push(Step {
                            chapter: chapter.to_owned(),
                            command: text,
                            expected: None,
                        });
                        after_sh = true;
                        continue;
                    }
                    "output" => {
                        let step = steps.last_mut().filter(|_| after_sh).unwrap_or_else(|| {
                            panic!("{chapter}: an output block must follow a sh block")
                        });
                        step.expected = Some(text);
                    }
                    _ => {}
                }
                after_sh = false;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    steps
}

/// The command a screenshot marker stands for: `<!-- tutorial: screenshot NAME PAGE SELECTOR
/// [| TEXT] -->` photographs the dashboard's page `PAGE` (its `#/...` part) once `SELECTOR` is
/// drawn and its text contains `TEXT`, into `NAME` in the edition's screenshot folder, at this
/// point of the chapter (so the picture shows the state the chapter describes). The page is in
/// the edition's language.
fn screenshot(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("<!-- tutorial: screenshot ")?;
    let rest = rest.strip_suffix("-->")?.trim();
    let (rest, contains) = match rest.split_once(" | ") {
        Some((rest, text)) => (rest, Some(text.trim())),
        None => (rest, None),
    };
    let mut words = rest.splitn(3, ' ');
    let (name, page, ready) = (words.next()?, words.next()?, words.next()?);
    let contains = contains.map_or(String::new(), |t| format!(" --contains '{t}'"));
    Some(format!(
        "lab screenshot \"$LAB_DASHBOARD_URL/?lang=$LAB_SCREENSHOT_LANG{page}\" --wait '{ready}'{contains} --out \"$LAB_SCREENSHOTS/{name}\"\n"
    ))
}

/// One piece of an expected line.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Text(String),
    Uuid,
    Number,
    Word,
    Any,
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = pattern;
    let mut text = String::new();
    while !rest.is_empty() {
        let placeholder = [
            ("<uuid>", Token::Uuid),
            ("<n>", Token::Number),
            ("<word>", Token::Word),
            ("<any>", Token::Any),
        ]
        .into_iter()
        .find(|(p, _)| rest.starts_with(p));
        match placeholder {
            Some((p, token)) => {
                if !text.is_empty() {
                    out.push(Token::Text(std::mem::take(&mut text)));
                }
                out.push(token);
                rest = &rest[p.len()..];
            }
            None => {
                let c = rest.chars().next().expect("not empty");
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        out.push(Token::Text(text));
    }
    out
}

/// Whether `line` matches the `tokens` of an expected line.
fn matches(tokens: &[Token], line: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return line.is_empty();
    };
    let prefix_lengths: Vec<usize> = match first {
        Token::Text(t) => {
            return line
                .strip_prefix(t.as_str())
                .is_some_and(|l| matches(rest, l));
        }
        Token::Uuid => {
            let ok = line.len() >= 36
                && line.as_bytes()[..36]
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || *b == b'-');
            if ok { vec![36] } else { vec![] }
        }
        Token::Number => {
            let digits = line
                .char_indices()
                .take_while(|(i, c)| {
                    c.is_ascii_digit() || (*i == 0 && *c == '-') || *c == '.' || *c == ','
                })
                .count();
            (1..=digits).rev().collect()
        }
        Token::Word => {
            let word = line.find(char::is_whitespace).unwrap_or(line.len());
            (1..=word).rev().collect()
        }
        Token::Any => (0..=line.len())
            .rev()
            .filter(|i| line.is_char_boundary(*i))
            .collect(),
    };
    prefix_lengths
        .into_iter()
        .any(|n| matches(rest, &line[n..]))
}

/// Whether `actual` (lines) matches `expected` (lines; `...` for any number of lines).
fn output_matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => {
            (0..=actual.len()).any(|skip| output_matches(rest, &actual[skip..]))
        }
        Some((pattern, rest)) => actual.split_first().is_some_and(|(line, more)| {
            matches(&tokens(pattern.trim_end()), line.trim_end()) && output_matches(rest, more)
        }),
    }
}

/// How a chapter says the lab is started (`<!-- tutorial: lab ARGS -->`), if it does.
fn lab_args(chapter: &str) -> Option<String> {
    chapter.lines().find_map(|l| {
        let args = l.trim().strip_prefix("<!-- tutorial: lab")?;
        Some(args.trim_end_matches("-->").trim().to_owned())
    })
}

/// The lab such arguments start: `--services a,b` (all by default), `--nodes N`.
fn lab_config(args: &str, data: &Path) -> LabConfig {
    let mut config = LabConfig::ephemeral(data);
    config.service.max_attempts = 3;
    config.service.retry_max_ms = 200;
    // Services started later (`lab start payment`) take their standard ports: pick free ones now.
    for svc in Service::ALL {
        config.ports.insert(svc, lab::pg::free_port().unwrap());
    }
    let mut words = args.split_whitespace();
    while let Some(flag) = words.next() {
        let value = words.next().expect("a flag's value");
        match flag {
            "--services" => {
                config.services = value
                    .split(',')
                    .map(|s| {
                        <Service as clap::ValueEnum>::from_str(s.trim(), true).expect("a service")
                    })
                    .collect();
            }
            "--nodes" => config.nodes = value.parse().expect("a node count"),
            other => panic!("the tutorial's lab takes no {other}"),
        }
    }
    config
}

const MARK: &str = "@@tutorial step@@";

/// One lab's part of the tutorial: how it is started, and the steps run against it.
struct Session {
    lab: String,
    steps: Vec<Step>,
}

async fn run_edition(dir: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let folder: PathBuf = root.join(dir);
    let mut sessions: Vec<Session> = Vec::new();
    for chapter in CHAPTERS {
        let text = std::fs::read_to_string(folder.join(chapter)).unwrap();
        match (lab_args(&text), sessions.last_mut()) {
            (Some(lab), _) => sessions.push(Session {
                lab,
                steps: Vec::new(),
            }),
            (None, Some(_)) => {}
            (None, None) => panic!("{dir}/{chapter}: the first chapter says how the lab starts"),
        }
        let session = sessions.last_mut().expect("one at least");
        session
            .steps
            .extend(steps(&format!("{dir}/{chapter}"), &text));
    }
    assert!(
        sessions.iter().map(|s| s.steps.len()).sum::<usize>() > 10,
        "{dir} has commands"
    );
    // librdkafka's complaints while the chapters stop the broker would bury a failure's message.
    saga_shared::telemetry::init_tracing("warn,librdkafka=off,rdkafka=off");
    // Where the screenshots go: into the docs with LAB_TUTORIAL_SCREENSHOTS set (how the
    // docs' tutorial images are made), else a folder thrown away (they are still taken: the
    // page must show what the chapter describes).
    let korean = dir.ends_with("/ko");
    let kept = std::env::var_os("LAB_TUTORIAL_SCREENSHOTS").is_some();
    let thrown_away = tempfile::tempdir().unwrap();
    let shots = if kept {
        root.join("docs/images/tutorial")
            .join(if korean { "ko" } else { "" })
    } else {
        thrown_away.path().to_owned()
    };
    for session in sessions {
        run_session(&session, (&shots, if korean { "ko" } else { "en" })).await;
    }
}

/// The script of `steps`, with the tutorial's standard addresses made the lab's: its services'
/// and its schema registry's URLs, its brokers (`127.0.0.1:9092`, and on three nodes `9093` and
/// `9094` too), its dashboard, and a free port for the second payment instance of phase 2.
fn script_for(
    steps: &[Step],
    lab_urls: &[(u16, String)],
    brokers: &str,
    dashboard: &str,
) -> String {
    let mut script = String::from("set -euo pipefail\n");
    for (n, step) in steps.iter().enumerate() {
        // The step's number and the time on stderr too: a failure's stderr then says which
        // step printed what, and how long each took.
        script.push_str(&format!(
            "echo '{MARK}'\necho \"-- step {n} at $(date +%T.%3N)\" >&2\n{}",
            step.command
        ));
    }
    for (port, url) in lab_urls {
        script = script
            .replace(&format!("http://127.0.0.1:{port}"), url)
            .replace(&format!("http://localhost:{port}"), url);
    }
    let nodes: Vec<&str> = brokers.split(',').collect();
    if nodes.len() == 1 {
        script = script.replace("127.0.0.1:9092", brokers);
    } else {
        // Through placeholders, so that one node's new address is not taken for another's.
        for i in 0..nodes.len() {
            script = script.replace(&format!("127.0.0.1:{}", 9092 + i), &format!("@@node{i}@@"));
        }
        for (i, node) in nodes.iter().enumerate() {
            script = script.replace(&format!("@@node{i}@@"), node);
        }
    }
    // The second payment instance of phase 2 (port 8092) too: the editions run side by side.
    let second = lab::pg::free_port().unwrap();
    script
        .replace("http://127.0.0.1:8080", &format!("http://{dashboard}"))
        .replace("--port 8092", &format!("--port {second}"))
        .replace("127.0.0.1:8092", &format!("127.0.0.1:{second}"))
}

async fn run_session(session: &Session, (shots, lang): (&Path, &str)) {
    let all = &session.steps;
    let data = tempfile::tempdir().unwrap();
    let config = lab_config(&session.lab, data.path());
    let lab = Lab::start(config, &mut |_| {}).await.unwrap();
    let client = LabClient::new(&lab);
    let brokers = lab.brokers().to_owned();
    let mut lab_urls: Vec<(u16, String)> = Service::ALL
        .iter()
        .map(|s| (s.default_port(), lab.url(*s)))
        .collect();
    // The schema registry's standard address too.
    lab_urls.push((
        lab::system::SCHEMA_REGISTRY_PORT,
        lab.schema_registry_url().to_owned(),
    ));
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(Some(lab)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dash_addr = listener.local_addr().unwrap();
    let dash =
        dashboard::Dashboard::serve(shared.clone(), client.clone(), brokers.clone(), listener)
            .unwrap();

    let script = script_for(all, &lab_urls, &brokers, &dash_addr.to_string());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_lab"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .current_dir(work.path())
        .env("LAB_DASHBOARD_URL", format!("http://{dash_addr}"))
        .env("LAB_ORDER_URL", &lab_urls[0].1)
        .env("LAB_NOTIFICATION_URL", &lab_urls[3].1)
        .env("LAB_BROKERS", &brokers)
        .env("LAB_SCHEMA_REGISTRY_URL", &lab_urls[4].1)
        .env("LAB_SCREENSHOTS", shots)
        .env("LAB_SCREENSHOT_LANG", lang)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Read as it comes, so that a step that hangs can be named.
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let status = match tokio::time::timeout(SESSION_LIMIT, child.wait()).await {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = child.kill().await;
            let stdout = String::from_utf8_lossy(&stdout.0.lock().unwrap()).into_owned();
            let outputs: Vec<&str> = stdout.split(&format!("{MARK}\n")).skip(1).collect();
            let step = &all[outputs.len().saturating_sub(1)];
            panic!(
                "{} did not finish within {SESSION_LIMIT:?}; it was at:\n{}\n--- its output so far\n{}\n--- stderr\n{}",
                step.chapter,
                step.command,
                outputs.last().unwrap_or(&""),
                tail(&String::from_utf8_lossy(&stderr.0.lock().unwrap()))
            );
        }
    };
    // The readers end with the pipes; what they read is complete once the shell has exited and
    // the pipes are drained.
    let out = Output {
        status,
        stdout: drained(stdout).await,
        stderr: drained(stderr).await,
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each step's output follows its mark; the first piece is before any step.
    let outputs: Vec<&str> = stdout.split(&format!("{MARK}\n")).skip(1).collect();
    let ran = outputs.len();
    if !out.status.success() {
        let step = &all[ran.saturating_sub(1)];
        panic!(
            "{} failed at:\n{}\n--- its output\n{}\n--- stderr\n{}",
            step.chapter,
            step.command,
            outputs.last().unwrap_or(&""),
            tail(&stderr)
        );
    }
    assert_eq!(ran, all.len(), "every step ran");
    for (step, actual) in all.iter().zip(outputs) {
        let Some(expected) = &step.expected else {
            continue;
        };
        let expected: Vec<&str> = expected.lines().collect();
        let actual_lines: Vec<&str> = actual.lines().collect();
        assert!(
            output_matches(&expected, &actual_lines),
            "{}: the output of\n{}\ndiffers from the chapter's.\n--- expected\n{}\n--- actual\n{}",
            step.chapter,
            step.command,
            expected.join("\n"),
            actual
        );
    }

    dash.shutdown().await;
    let lab = shared.lock().await.take().unwrap();
    lab.shutdown().await;
}

/// The last lines of a script's stderr (the failing step's, and a few before it).
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The longest a session's commands may take together (under the test runner's 240 s limit, so
/// that a step that hangs is named).
const SESSION_LIMIT: Duration = Duration::from_secs(200);

type Collected = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Reads `pipe` to its end in the background, into the buffer returned.
fn collect(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (Collected, tokio::task::JoinHandle<()>) {
    let buffer = Collected::default();
    let into = buffer.clone();
    let reader = tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        loop {
            match tokio::io::AsyncReadExt::read(&mut pipe, &mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buffer, reader)
}

/// What a [`collect`]ed pipe held, once it ended.
async fn drained((buffer, reader): (Collected, tokio::task::JoinHandle<()>)) -> Vec<u8> {
    reader.await.unwrap();
    std::mem::take(&mut *buffer.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_english_tutorial_runs_as_written() {
    run_edition("docs/tutorial").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_korean_tutorial_runs_as_written() {
    run_edition("docs/tutorial/ko").await;
}

#[test]
fn outputs_match_with_placeholders() {
    let yes = |e: &[&str], a: &[&str]| assert!(output_matches(e, a), "{e:?} vs {a:?}");
    let no = |e: &[&str], a: &[&str]| assert!(!output_matches(e, a), "{e:?} vs {a:?}");
    yes(
        &["order <uuid> is CONFIRMED"],
        &["order 019ac3f1-0000-7000-8000-000000000001 is CONFIRMED"],
    );
    no(
        &["order <uuid> is CONFIRMED"],
        &["order 019ac3f1 is CONFIRMED"],
    );
    no(
        &["order <uuid> is CONFIRMED"],
        &["order 019ac3f1-0000-7000-8000-000000000001 is PENDING"],
    );
    yes(&["balance <n> won"], &["balance 90,000 won"]);
    no(&["balance <n> won"], &["balance lots won"]);
    yes(&["<word> ok <any>"], &["a:b ok and the rest"]);
    yes(&["first", "...", "last"], &["first", "x", "y", "last"]);
    yes(&["first", "...", "last"], &["first", "last"]);
    no(&["first", "last"], &["first", "x", "last"]);
    no(&["only"], &["only", "more"]);
}

#[test]
fn screenshot_markers_become_commands() {
    assert_eq!(
        screenshot("<!-- tutorial: screenshot chain.png #/ #svc-inventory .lag | 1 -->").unwrap(),
        "lab screenshot \"$LAB_DASHBOARD_URL/?lang=$LAB_SCREENSHOT_LANG#/\" --wait '#svc-inventory .lag' --contains '1' --out \"$LAB_SCREENSHOTS/chain.png\"\n"
    );
    assert_eq!(
        screenshot("<!-- tutorial: screenshot dlq.png #/dlq table -->").unwrap(),
        "lab screenshot \"$LAB_DASHBOARD_URL/?lang=$LAB_SCREENSHOT_LANG#/dlq\" --wait 'table' --out \"$LAB_SCREENSHOTS/dlq.png\"\n"
    );
    assert_eq!(screenshot("<!-- tutorial: lab --nodes 3 -->"), None);
}
