//! `make image` (hack/image.sh) builds a real OCI image with no Docker engine: its config
//! runs the static binary as the non-root user 65532 with the OCI labels, its one layer holds
//! that binary (which runs: `autoheal version`) and the nonroot user, and it describes the
//! same image as the Dockerfile.
//!
//! The script is incremental (cargo, and crane built once into ~/.cache/autoheal/tools), so
//! after `make image` this test only assembles the image again, into a directory of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A blob of the OCI layout by digest (`sha256:…`).
fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

fn json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temp directory removed on drop (kept when the test fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The keys of the Dockerfile's final stage LABEL instructions.
fn dockerfile_labels(dockerfile: &str) -> Vec<String> {
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let mut keys = Vec::new();
    let mut in_label = false;
    for line in final_stage.lines().map(str::trim) {
        let rest = match line.strip_prefix("LABEL ") {
            Some(rest) => rest,
            None if in_label => line,
            None => continue,
        };
        if let Some((key, _)) = rest.split_once('=') {
            keys.push(key.trim().to_string());
        }
        in_label = line.ends_with('\\');
    }
    assert!(!keys.is_empty(), "the final stage has labels");
    keys
}

#[test]
fn make_image_builds_an_oci_archive_of_the_static_binary_run_as_nonroot() {
    let out = TempDir(std::env::temp_dir().join(format!("autoheal-image-{}", std::process::id())));
    let archive = run(Command::new(root().join("hack/image.sh"))
        .current_dir(root())
        .env("IMAGE_OUT", &out.0));
    let archive = PathBuf::from(archive.trim());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        archive,
        out.0.join(format!("autoheal-{version}.oci.tar")),
        "the script prints the archive's path"
    );

    // The archive is the OCI layout, as one tar.
    let listing = run(Command::new("tar").arg("-tf").arg(&archive));
    for entry in ["./oci-layout", "./index.json"] {
        assert!(
            listing.lines().any(|l| l == entry),
            "{entry} in the archive: {listing}"
        );
    }
    let layout = out.0.join("unpacked");
    std::fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "one image: {index}");
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = json(&blob(&layout, manifests[0]["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        1,
        "one layer on an empty base (scratch): {manifest}"
    );

    // The config: platform, user, entrypoint, labels.
    let config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "runs as nonroot: {c}");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/autoheal"]), "{c}");
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{c}");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "autoheal");
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let head = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root()));
    assert!(
        revision.starts_with(head.trim()),
        "revision {revision} is HEAD {}",
        head.trim()
    );
    for key in [
        "org.opencontainers.image.source",
        "org.opencontainers.image.description",
        "org.opencontainers.image.created",
    ] {
        assert!(labels[key].is_string(), "label {key}: {labels}");
    }
    // The Dockerfile sets the same labels, user and entrypoint.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for key in dockerfile_labels(&dockerfile) {
        assert!(
            labels[&key].is_string(),
            "the Dockerfile's label {key} is in the image too: {labels}"
        );
    }
    for line in [
        "FROM gcr.io/distroless/static:nonroot",
        "USER 65532:65532",
        r#"ENTRYPOINT ["/autoheal"]"#,
        r#"CMD ["run"]"#,
    ] {
        assert!(dockerfile.lines().any(|l| l == line), "Dockerfile: {line}");
    }

    // The layer: the binary, the nonroot user and its home, /tmp.
    let layer = blob(&layout, layers[0]["digest"].as_str().unwrap());
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(&layer));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().last() == Some(path))
            .unwrap_or_else(|| panic!("{path} in the layer:\n{listing}"))
            .to_string()
    };
    assert!(
        entry("./autoheal").starts_with("-rwxr-xr-x 0/0 "),
        "{listing}"
    );
    assert!(
        entry("./home/nonroot/").contains(" 65532/65532 "),
        "{listing}"
    );
    assert!(entry("./tmp/").starts_with("drwxrwxrwt "), "{listing}");
    let rootfs = out.0.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );

    // The binary is static and runs.
    let binary = rootfs.join("autoheal");
    let ldd = Command::new("ldd").arg(&binary).output().unwrap();
    assert!(
        !ldd.status.success() || String::from_utf8_lossy(&ldd.stdout).contains("statically"),
        "no dynamic dependencies: {}",
        String::from_utf8_lossy(&ldd.stdout)
    );
    let printed = run(Command::new(&binary).arg("version"));
    assert_eq!(
        printed.trim(),
        format!("autoheal {version} (commit {revision})"),
        "`autoheal version` from the image's layer"
    );
}
