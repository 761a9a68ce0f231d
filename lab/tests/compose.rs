//! The container lab checked statically (no Docker engine is needed): the compose file's shape,
//! and every flag and environment variable it passes, against the real binaries' `--help`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const APP_SERVICES: [(&str, u16, &str); 4] = [
    ("order-service", 8081, "orders-db"),
    ("payment-service", 8082, "payments-db"),
    ("inventory-service", 8083, "inventory-db"),
    ("notification-service", 8084, "notifications-db"),
];

fn compose() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml exists");
    let mut code = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    assert!(
        code.all(|l| !l.contains("sleep")),
        "the compose lab waits on health checks, never sleeps"
    );
    let doc = YamlLoader::load_from_str(&text)
        .expect("valid YAML")
        .remove(0);
    resolve_merges(doc)
}

/// Applies YAML merge keys (`<<: *anchor`), which compose uses and yaml-rust2 leaves as keys.
fn resolve_merges(node: Yaml) -> Yaml {
    match node {
        Yaml::Hash(map) => {
            let mut out = yaml_rust2::yaml::Hash::new();
            if let Some(Yaml::Hash(base)) = map
                .get(&Yaml::String("<<".into()))
                .cloned()
                .map(resolve_merges)
            {
                out.extend(base);
            }
            for (k, v) in map {
                if k != Yaml::String("<<".into()) {
                    out.insert(k, resolve_merges(v));
                }
            }
            Yaml::Hash(out)
        }
        Yaml::Array(items) => Yaml::Array(items.into_iter().map(resolve_merges).collect()),
        other => other,
    }
}

fn strings(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `--help` of a service, from the same clap definition its binary parses.
fn service_help(name: &str) -> String {
    use clap::CommandFactory;
    let mut command = match name {
        "order-service" => order_service::Config::command(),
        "payment-service" => payment_service::Config::command(),
        "inventory-service" => inventory_service::Config::command(),
        "notification-service" => notification_service::Config::command(),
        other => panic!("unknown service {other}"),
    };
    command.render_long_help().to_string()
}

/// `--help` of the broker binary (built for the broker's own integration tests).
fn broker_help() -> String {
    binary_help("broker")
}

/// `--help` of a binary of the workspace, built next to this test.
fn binary_help(binary: &str) -> String {
    let dir: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .into();
    let path = dir.join(binary);
    let out = Command::new(&path)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {} --help (build the workspace first): {e}",
                path.display()
            )
        });
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_service_waits_for_healthy_dependencies() {
    let c = compose();
    let services = &c["services"];
    for db in [
        "orders-db",
        "payments-db",
        "inventory-db",
        "notifications-db",
        "broker",
        "kafka",
        "schema-registry",
    ] {
        assert!(
            !services[db]["healthcheck"]["test"].is_badvalue(),
            "{db} has a health check"
        );
    }
    for (name, port, db) in APP_SERVICES {
        let s = &services[name];
        assert_eq!(
            strings(&s["command"]),
            vec![name.to_string()],
            "{name} runs its own binary"
        );
        assert_eq!(
            strings(&s["ports"]),
            vec![format!("127.0.0.1:{port}:{port}")],
            "{name} on its standard port, published to this machine only"
        );
        let deps = &s["depends_on"];
        for dep in [db, "broker", "kafka", "schema-registry"] {
            assert_eq!(
                deps[dep]["condition"].as_str(),
                Some("service_healthy"),
                "{name} waits for {dep}"
            );
        }
        // Exactly one of the two brokers runs, chosen by profile.
        assert_eq!(deps["broker"]["required"].as_bool(), Some(false));
        assert_eq!(deps["kafka"]["required"].as_bool(), Some(false));
        assert!(
            !s["healthcheck"]["test"].is_badvalue(),
            "{name} has a health check"
        );
    }
    // The order service prices from the inventory's catalogue: it starts once that is out.
    assert_eq!(
        services["order-service"]["depends_on"]["inventory-service"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert!(
        strings(&services["inventory-service"]["healthcheck"]["test"])
            .iter()
            .any(|t| t.contains("/ready")),
        "the inventory service is healthy once ready"
    );
    assert_eq!(strings(&services["broker"]["profiles"]), vec!["lab-broker"]);
    assert_eq!(strings(&services["kafka"]["profiles"]), vec!["kafka"]);
    // The registry keeps its data on whichever broker runs.
    let registry = &services["schema-registry"]["depends_on"];
    for dep in ["broker", "kafka"] {
        assert_eq!(registry[dep]["condition"].as_str(), Some("service_healthy"));
        assert_eq!(registry[dep]["required"].as_bool(), Some(false));
    }
}

#[test]
fn the_services_use_the_schema_registry_the_compose_file_runs() {
    let c = compose();
    let services = &c["services"];
    let registry = &services["schema-registry"];
    assert_eq!(strings(&registry["command"]), vec!["schema-registry"]);
    assert_eq!(strings(&registry["ports"]), vec!["127.0.0.1:8085:8085"]);
    let help = binary_help("schema-registry");
    for key in registry["environment"]
        .as_hash()
        .expect("environment map")
        .keys()
    {
        let key = key.as_str().unwrap();
        assert!(
            help.contains(&format!("env: {key}=")),
            "schema-registry reads {key}"
        );
    }
    let listen = registry["environment"]["LISTEN"].as_str().unwrap();
    for (name, _, _) in APP_SERVICES {
        let url = services[name]["environment"]["SCHEMA_REGISTRY_URL"].as_str();
        assert_eq!(
            url,
            Some("http://schema-registry:8085"),
            "{name} registers its schemas"
        );
        assert!(listen.ends_with(":8085"), "{listen}");
    }
}

#[test]
fn every_flag_and_variable_the_compose_file_passes_exists_in_the_binaries() {
    let c = compose();
    let services = &c["services"];
    for (name, _, _) in APP_SERVICES {
        let help = service_help(name);
        let env = services[name]["environment"]
            .as_hash()
            .expect("environment map");
        for key in env.keys() {
            let key = key.as_str().unwrap();
            assert!(
                help.contains(&format!("env: {key}=")) || help.contains(&format!("env: {key}]")),
                "{name} reads {key} (per --help)"
            );
        }
    }
    let broker = &services["broker"];
    let command = strings(&broker["command"]);
    assert_eq!(command[0], "broker");
    let help = broker_help();
    let flags: BTreeSet<&str> = command
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(String::as_str)
        .collect();
    for flag in flags {
        assert!(help.contains(flag), "broker accepts {flag}");
    }
    // Containers use broker:9092, the host the published second listener.
    let joined = command.join(" ");
    assert!(joined.contains("broker:9092,localhost:29092"), "{joined}");
    // Published on the host's loopback only: a class on a shared network can't reach it.
    assert_eq!(strings(&broker["ports"]), vec!["127.0.0.1:29092:29092"]);
    assert_eq!(
        strings(&services["kafka"]["ports"]),
        vec!["127.0.0.1:29092:29092"]
    );
}
