//! `docker-compose.yml` and the Dockerfiles hang together: no Docker engine needed.
//!
//! Checks what breaks a `docker compose up --build` late or silently: build contexts,
//! Dockerfiles and their `COPY` sources exist (and are not dockerignored), everything the
//! Cargo manifest names is copied into the builder, ovn-peerd gets the settings it reads (by
//! the names `src/` reads them under), and the addresses and ports agree across services.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let path = repo().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("read docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// A service's `environment`, in either of compose's forms (map, or list of `K=V`).
fn environment(svc: &Value) -> Vec<(String, String)> {
    match &svc["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().expect("env key").to_string(), v)
            })
            .collect(),
        Value::Sequence(s) => s
            .iter()
            .map(|e| {
                let e = e.as_str().expect("env entry");
                let (k, v) = e.split_once('=').unwrap_or((e, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn env_var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// (context dir, Dockerfile path) of a service built from this repository.
fn build_paths(name: &str, svc: &Value) -> Option<(PathBuf, PathBuf)> {
    let build = svc.get("build")?;
    let (context, dockerfile) = match build {
        Value::String(ctx) => (ctx.clone(), "Dockerfile".to_string()),
        _ => (
            build["context"].as_str().unwrap_or(".").to_string(),
            build["dockerfile"]
                .as_str()
                .unwrap_or("Dockerfile")
                .to_string(),
        ),
    };
    let context = repo().join(context);
    assert!(
        context.is_dir(),
        "{name}: build context {} is no directory",
        context.display()
    );
    let dockerfile = context.join(dockerfile);
    assert!(
        dockerfile.is_file(),
        "{name}: no Dockerfile at {}",
        dockerfile.display()
    );
    Some((context, dockerfile))
}

/// Dockerfile instructions with continuation lines joined and comments dropped.
fn instructions(dockerfile: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dockerfile).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The sources of every `COPY`/`ADD` from the build context (not `--from=` another stage).
fn copy_sources(dockerfile: &Path) -> Vec<String> {
    let mut sources = Vec::new();
    for ins in instructions(dockerfile) {
        let mut words = ins.split_whitespace();
        let Some(op) = words.next() else { continue };
        if !op.eq_ignore_ascii_case("COPY") && !op.eq_ignore_ascii_case("ADD") {
            continue;
        }
        let args: Vec<&str> = words.collect();
        if args.iter().any(|a| a.starts_with("--from")) {
            continue;
        }
        let args: Vec<&str> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
        assert!(args.len() >= 2, "{}: malformed {ins}", dockerfile.display());
        sources.extend(args[..args.len() - 1].iter().map(|s| s.to_string()));
    }
    sources
}

/// `.dockerignore` patterns, simplified to path prefixes (what this repository uses).
fn dockerignored(context: &Path, source: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(context.join(".dockerignore")) else {
        return false;
    };
    let source = source.trim_start_matches("./").trim_end_matches('/');
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('*'))
        .map(|l| l.trim_start_matches("./").trim_end_matches('/'))
        .any(|p| source == p || source.starts_with(&format!("{p}/")))
}

fn exposed_ports(dockerfile: &Path) -> BTreeSet<u16> {
    instructions(dockerfile)
        .iter()
        .filter(|i| i.to_ascii_uppercase().starts_with("EXPOSE "))
        .flat_map(|i| {
            i.split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect()
}

/// Container ports a service publishes ("[ip:]host:container[/proto]" or long form).
fn published_ports(svc: &Value) -> BTreeSet<u16> {
    let Some(ports) = svc["ports"].as_sequence() else {
        return BTreeSet::new();
    };
    ports
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => p["target"].as_u64().expect("ports target") as u16,
            _ => {
                let s = p
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| serde_yaml::to_string(p).unwrap().trim().to_string());
                let container = s.rsplit(':').next().unwrap().split('/').next().unwrap();
                container
                    .parse()
                    .unwrap_or_else(|_| panic!("bad port mapping {s}"))
            }
        })
        .collect()
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

/// Every Rust source under `src/`, concatenated: where ovn-peerd names its settings.
fn sources_text() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(&repo().join("src"), &mut out);
    out
}

#[test]
fn every_build_context_dockerfile_and_copy_source_exists() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let mut built = 0;
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        let Some((context, dockerfile)) = build_paths(name, svc) else {
            assert!(svc["image"].is_string(), "{name}: neither build nor image");
            continue;
        };
        built += 1;
        for src in copy_sources(&dockerfile) {
            let path = context.join(&src);
            assert!(
                path.exists(),
                "{name}: {} copies {src}, which does not exist",
                dockerfile.display()
            );
            assert!(
                !dockerignored(&context, &src),
                "{name}: {} copies {src}, which .dockerignore excludes",
                dockerfile.display()
            );
            if src.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert!(
                    mode & 0o111 != 0,
                    "{src} is copied as an entrypoint but not executable"
                );
            }
        }
    }
    assert_eq!(
        built, 2,
        "ovn-central and ovn-peerd are built from this repository"
    );
}

#[test]
fn build_context_leaves_out_target() {
    let text = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(text
        .lines()
        .any(|l| l.trim().trim_end_matches('/') == "target"));
}

#[test]
fn ovn_peerd_image_gets_everything_cargo_needs() {
    let compose = compose();
    let (_, dockerfile) = build_paths("ovn-peerd", service(&compose, "ovn-peerd")).unwrap();
    let copied: BTreeSet<String> = copy_sources(&dockerfile)
        .into_iter()
        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let mut needed = vec!["Cargo.toml", "Cargo.lock", "src"];
    // Cargo resolves every target the manifest declares, even for `--bin ovn-peerd`.
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if manifest.contains(section) {
            needed.push(dir);
        }
    }
    // .sqlx (the checked SQL statements) and .cargo (SQLX_OFFLINE=true): the image builds
    // without a database.
    for file in ["build.rs", "proto", "migrations", ".sqlx", ".cargo"] {
        if repo().join(file).exists() {
            needed.push(file);
        }
    }
    // Path dependencies and workspace members (tests/support): cargo loads their manifests
    // too. A path is copied when it or a directory above it is.
    let quoted = |line: &str| -> Vec<String> {
        line.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut paths: Vec<String> = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.contains("path = \"") || line.starts_with("members") {
            paths.extend(quoted(line.split_once('=').map(|(_, v)| v).unwrap_or("")));
        }
    }
    for n in needed.into_iter().map(str::to_string).chain(paths) {
        let n = n.trim_end_matches('/').to_string();
        assert!(
            Path::new(&n)
                .ancestors()
                .any(|a| copied.contains(a.to_str().unwrap_or_default())),
            "{} does not COPY {n}",
            dockerfile.display()
        );
    }
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(
        text.contains("--locked"),
        "the image must build from Cargo.lock"
    );
    assert!(
        !text.contains("protobuf"),
        "build.rs compiles proto/ with protox: the image needs no protobuf package"
    );
    let user = instructions(&dockerfile)
        .into_iter()
        .rfind(|i| i.starts_with("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !matches!(user.trim(), "USER root" | "USER 0" | "USER 0:0"),
        "runs as root"
    );
}

#[test]
fn ovn_peerd_gets_the_settings_it_reads() {
    let compose = compose();
    let svc = service(&compose, "ovn-peerd");
    let env = environment(svc);
    let src = sources_text();
    for key in ["DATABASE_URL", "OVN_NB_DB", "OVN_PEERD_LISTEN"] {
        assert!(
            env_var(&env, key).is_some_and(|v| !v.is_empty()),
            "ovn-peerd: {key} unset"
        );
    }
    // Every variable given is one ovn-peerd reads: catches typos and renames.
    for (key, _) in &env {
        assert!(
            src.contains(&format!("\"{key}\"")),
            "ovn-peerd: {key} is set in docker-compose.yml but read nowhere in src/"
        );
    }

    // DATABASE_URL points at the postgres service, with its credentials and database.
    let url = env_var(&env, "DATABASE_URL").unwrap();
    let pg_env = environment(service(&compose, "postgres"));
    let pg = |k: &str| env_var(&pg_env, k).unwrap_or_else(|| panic!("postgres: {k} unset"));
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        pg("POSTGRES_USER"),
        pg("POSTGRES_PASSWORD"),
        pg("POSTGRES_DB")
    );
    assert_eq!(url, expected);

    // OVN_NB_DB is tcp:<ovn-central service>:<a port its image exposes>.
    let nb = env_var(&env, "OVN_NB_DB").unwrap();
    let rest = nb.strip_prefix("tcp:").expect("OVN_NB_DB is a tcp: remote");
    let (host, port) = rest.rsplit_once(':').expect("tcp:HOST:PORT");
    let central = service(&compose, host);
    let (_, central_df) = build_paths(host, central).unwrap();
    assert!(
        exposed_ports(&central_df).contains(&port.parse().unwrap()),
        "{nb}: port not exposed"
    );
}

#[test]
fn ports_agree() {
    let compose = compose();
    let svc = service(&compose, "ovn-peerd");
    let env = environment(svc);
    let (_, dockerfile) = build_paths("ovn-peerd", svc).unwrap();
    let exposed = exposed_ports(&dockerfile);
    let published = published_ports(svc);
    for key in ["OVN_PEERD_LISTEN", "OVN_PEERD_METRICS_LISTEN"] {
        let addr = env_var(&env, key).unwrap_or_else(|| panic!("ovn-peerd: {key} unset"));
        assert!(
            addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:"),
            "{key}={addr}: unreachable from other containers"
        );
        let port = port_of(addr);
        assert!(
            exposed.contains(&port),
            "{key} port {port} not in EXPOSE {exposed:?}"
        );
        assert!(
            published.contains(&port),
            "{key} port {port} not published ({published:?})"
        );
    }
    assert_eq!(exposed, BTreeSet::from([50051, 9150]));
}

#[test]
fn dependencies_wait_for_health() {
    let compose = compose();
    let svc = service(&compose, "ovn-peerd");
    let deps = svc["depends_on"]
        .as_mapping()
        .expect("ovn-peerd depends_on as a map");
    let names: BTreeSet<&str> = deps.keys().filter_map(Value::as_str).collect();
    assert_eq!(names, BTreeSet::from(["ovn-central", "postgres"]));
    for (name, cond) in deps {
        let name = name.as_str().unwrap();
        assert_eq!(
            cond["condition"].as_str(),
            Some("service_healthy"),
            "{name}"
        );
        let dep = service(&compose, name);
        let in_image = build_paths(name, dep).is_some_and(|(_, df)| {
            instructions(&df)
                .iter()
                .any(|i| i.starts_with("HEALTHCHECK "))
        });
        assert!(
            dep["healthcheck"].is_mapping() || in_image,
            "{name} has no health check"
        );
    }
    let check =
        serde_yaml::to_string(&service(&compose, "ovn-central")["healthcheck"]["test"]).unwrap();
    assert!(
        check.contains("ovn-nbctl") && check.contains("tcp:127.0.0.1:6641"),
        "{check}"
    );
}
