//! Mutual TLS between peers, with a CA and node certificates made by the `openssl` CLI.

// A failed unwrap is a failed test here.
#![allow(clippy::unwrap_used)]

mod peer_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use peer_support::{config_for, free_port, receive, wait_until, TestNode};
use starcite_net::peer::{load_peer_tls, PeerNode, PeerTls, PeerTlsConfig};

fn openssl(directory: &Path, arguments: &[&str]) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(directory)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA in `directory`: `ca.pem`, `ca.key`.
fn make_ca(directory: &Path) {
    openssl(
        directory,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=starcite-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A node certificate signed by the CA, with `subject_alternative_names` (openssl syntax).
fn make_node_certificate(
    directory: &Path,
    name: &str,
    subject_alternative_names: &str,
) -> PeerTlsConfig {
    let extensions = directory.join(format!("{name}.ext"));
    std::fs::write(
        &extensions,
        format!(
            "subjectAltName={subject_alternative_names}\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )
    .unwrap();
    let key = format!("{name}.key");
    let request = format!("{name}.csr");
    let certificate = format!("{name}.pem");
    openssl(
        directory,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &request,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        directory,
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &certificate,
            "-days",
            "2",
            "-extfile",
            extensions.to_str().unwrap(),
        ],
    );
    PeerTlsConfig {
        cert_path: directory.join(certificate),
        key_path: directory.join(key),
        ca_path: directory.join("ca.pem"),
    }
}

fn load(config: &PeerTlsConfig) -> PeerTls {
    load_peer_tls(config).unwrap_or_else(|error| panic!("{error}"))
}

/// Two nodes with valid certificates (one addressed by IP, one by DNS name) exchange frames
/// over TLS; a third whose certificate names another host is refused in both directions.
#[test]
fn mutual_tls_connects_valid_nodes_and_refuses_a_wrong_san() {
    let directory = tempfile::tempdir().unwrap();
    make_ca(directory.path());
    let good = make_node_certificate(directory.path(), "good", "IP:127.0.0.1,DNS:localhost");
    let wrong = make_node_certificate(directory.path(), "wrong", "DNS:wrong.example");

    let topology = vec![
        PeerNode::new("n0@127.0.0.1", free_port()),
        PeerNode::new("n1@localhost", free_port()),
        PeerNode::new("n2@127.0.0.1", free_port()),
    ];
    let first = TestNode::start(config_for(&topology[0], &topology, Some(load(&good))));
    let second = TestNode::start(config_for(&topology[1], &topology, Some(load(&good))));
    let impostor = TestNode::start(config_for(&topology[2], &topology, Some(load(&wrong))));

    wait_until(
        Duration::from_secs(10),
        "first and second to connect",
        || {
            first.connected_peers() == vec![second.id.clone()]
                && second.connected_peers() == vec![first.id.clone()]
        },
    );
    first.send(&second.id, "over tls").unwrap();
    second.send(&first.id, "and back").unwrap();
    assert_eq!(receive(&second, Duration::from_secs(10)).body, "over tls");
    assert_eq!(receive(&first, Duration::from_secs(10)).body, "and back");

    // Outbound: the impostor's server certificate does not name 127.0.0.1. Inbound: its client
    // certificate does not match the host of the node id it claims.
    wait_until(
        Duration::from_secs(10),
        "both refusals to be logged",
        || {
            let logs = first.logs.text();
            logs.contains("failed to connect to peer n2@127.0.0.1")
                && logs.contains("refused peer connection from n2@127.0.0.1")
        },
    );
    impostor.send(&first.id, "never delivered").unwrap();
    first.send(&impostor.id, "never delivered").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(impostor.connected_peers().is_empty());
    assert!(!first.status_of(&impostor.id).connected);
    assert!(!first.status_of(&impostor.id).inbound_connected);
    assert_eq!(first.status_of(&impostor.id).frames_received, 0);
    assert!(impostor.frames.try_recv().is_err());
}

/// A plaintext dialler gets no handshake from a TLS node.
#[test]
fn plaintext_peer_is_refused_by_a_tls_node() {
    let directory = tempfile::tempdir().unwrap();
    make_ca(directory.path());
    let good = make_node_certificate(directory.path(), "good", "IP:127.0.0.1");
    let topology = vec![
        PeerNode::new("n0@127.0.0.1", free_port()),
        PeerNode::new("n1@127.0.0.1", free_port()),
    ];
    let secured = TestNode::start(config_for(&topology[0], &topology, Some(load(&good))));
    let plain = TestNode::start(config_for(&topology[1], &topology, None));
    std::thread::sleep(Duration::from_secs(1));
    assert!(secured.connected_peers().is_empty());
    assert!(plain.connected_peers().is_empty());
}

/// Load errors name the variable and the file, as config validation prints them.
#[test]
fn load_errors_name_the_variable_and_the_path() {
    let directory = tempfile::tempdir().unwrap();
    make_ca(directory.path());
    let good = make_node_certificate(directory.path(), "good", "IP:127.0.0.1");
    let missing: PathBuf = directory.path().join("missing.pem");

    let mut config = good.clone();
    config.cert_path = missing.clone();
    let message = load_peer_tls(&config).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot load STARCITE_PEER_TLS_CERT: {}: ",
            missing.display()
        )),
        "{message}"
    );

    let mut config = good.clone();
    config.key_path = good.ca_path.clone();
    let message = load_peer_tls(&config).unwrap_err().to_string();
    assert!(
        message.starts_with("cannot load STARCITE_PEER_TLS_KEY: "),
        "{message}"
    );

    let garbage = directory.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let mut config = good;
    config.ca_path = garbage.clone();
    let message = load_peer_tls(&config).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!(
            "cannot load STARCITE_PEER_TLS_CA: {}: ",
            garbage.display()
        )),
        "{message}"
    );
}
