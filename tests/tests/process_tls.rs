//! TLS with real member processes: mutual TLS between members, TLS (and
//! client certificates) for clients, refusals that say why on both sides,
//! and certificate rotation without a restart.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kuberaft_node::tls::ClientTls;
use kuberaft_node::transport::channel::lazy_channel_with;
use kuberaft_proto::admin::admin_client::AdminClient;
use kuberaft_proto::admin::{self as adminpb};
use kuberaft_proto::kv as kvpb;
use kuberaft_proto::kv::kv_client::KvClient;
use kuberaft_tests::cluster::{self, Cluster, build_binary, free_port, node_binary};
use kuberaft_tests::tls::{SecretDir, TestCa};
use tonic::transport::Channel;

fn raftctl_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_binary("raftctl")).clone()
}

fn raftctl(args: &[&str]) -> Output {
    Command::new(raftctl_bin())
        .args(args)
        .env_remove("KUBERAFT_ENDPOINTS")
        .output()
        .expect("run raftctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tls_channel(addr: &str, tls: &ClientTls) -> Channel {
    lazy_channel_with(addr, Duration::from_millis(300), Some(tls.clone())).expect("channel")
}

async fn tls_status(addr: &str, tls: &ClientTls) -> Option<adminpb::StatusResponse> {
    let mut a = AdminClient::new(tls_channel(addr, tls));
    tokio::time::timeout(
        Duration::from_millis(500),
        a.status(adminpb::StatusRequest {}),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner())
}

/// The leader the given members agree on, asked over TLS.
async fn wait_for_leader_tls(addrs: &[String], tls: &ClientTls, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for a in addrs {
            if let Some(s) = tls_status(a, tls).await {
                seen.push(s);
            }
        }
        if let Some(l) = seen.iter().find(|s| s.role == adminpb::Role::Leader as i32)
            && seen.len() == addrs.len()
            && seen.iter().all(|s| s.leader_id == l.member_id)
        {
            return l.member_id;
        }
        assert!(
            start.elapsed() < timeout,
            "no leader over TLS within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<(), tonic::Status> {
    kv.put(kvpb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    })
    .await
    .map(drop)
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> Option<Vec<u8>> {
    kv.get(kvpb::GetRequest {
        key: key.as_bytes().to_vec(),
        consistency: 0,
    })
    .await
    .expect("get")
    .into_inner()
    .kv
    .map(|kv| kv.value)
}

/// Waits until `id`'s log contains `needle`.
fn wait_for_log(c: &mut Cluster, id: u64, needle: &str, timeout: Duration) {
    let start = Instant::now();
    while !c.log_of(id).contains(needle) {
        if start.elapsed() > timeout {
            c.dump_logs();
            panic!("member {id} never logged {needle:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cert_files(
    dir: &std::path::Path,
    name: &str,
    pem: &kuberaft_operator::certs::CertPem,
) -> (String, String) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &pem.cert).expect("write cert");
    std::fs::write(&k, &pem.key).expect("write key");
    (c.display().to_string(), k.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_form_a_cluster_over_mutual_tls_and_serve_clients_over_tls() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster-a CA");
    let secret = SecretDir::new(&pki.path().join("member"), &ca.ca, &ca.issue());
    let mut args = secret.peer_flags();
    args.extend(secret.client_flags(true));
    let mut c = Cluster::start_with_each(3, |_| args.clone());

    let client_cert = ca.issue();
    let tls = ca.client(Some(&client_cert));
    let addrs = c.client_addrs();
    let leader = wait_for_leader_tls(&addrs, &tls, Duration::from_secs(15)).await;
    let follower = c.ids().into_iter().find(|&i| i != leader).unwrap();
    let follower_addr = c.member(follower).client_addr();

    // raftctl over TLS with a client certificate, through a follower: it
    // forwards the write to the leader's client port, over TLS too.
    let cacert = secret.ca().display().to_string();
    let (cert, key) = cert_files(pki.path(), "raftctl", &client_cert);
    let https = format!("https://{follower_addr}");
    let tls_args = ["--cacert", &cacert, "--cert", &cert, "--key", &key];
    let o = raftctl(
        &[
            &["--endpoints", &https][..],
            &tls_args,
            &["put", "greeting", "hello"],
        ]
        .concat(),
    );
    assert!(
        o.status.success(),
        "put over TLS failed: {}",
        text(&o.stderr)
    );
    let o = raftctl(
        &[
            &["--endpoints", &https][..],
            &tls_args,
            &["get", "greeting"],
        ]
        .concat(),
    );
    assert!(
        o.status.success(),
        "get over TLS failed: {}",
        text(&o.stderr)
    );
    assert!(text(&o.stdout).contains("hello"), "{}", text(&o.stdout));

    // The gRPC client of the node crate, over TLS, sees the same.
    let mut kv = KvClient::new(tls_channel(&follower_addr, &tls));
    assert_eq!(
        get(&mut kv, "greeting").await.as_deref(),
        Some(&b"hello"[..])
    );

    // The calls that change the cluster go to the admin ports, which serve the members'
    // mutual TLS: a client without a certificate the cluster CA signed changes nothing...
    let leader_admin = c.member(leader).admin_addr();
    let mut anonymous = AdminClient::new(tls_channel(&leader_admin, &ca.client(None)));
    let refused = anonymous
        .transfer_leadership(adminpb::TransferLeadershipRequest { to: follower })
        .await
        .expect_err("the admin port wants a certificate");
    assert_ne!(refused.code(), tonic::Code::Ok);
    let s = tls_status(&follower_addr, &tls).await.expect("status");
    assert_eq!(s.leader_id, leader, "leadership did not move: {refused}");
    assert_eq!(s.admin_addr, c.member(follower).admin_addr());
    // ... while raftctl with one finds the admin port from Status, and a follower forwards
    // the transfer to the leader's admin port over mutual TLS.
    let to = follower.to_string();
    let o = raftctl(
        &[
            &["--endpoints", &https][..],
            &tls_args,
            &["transfer-leader", "--to", &to],
        ]
        .concat(),
    );
    assert!(
        o.status.success(),
        "transfer-leader over TLS failed: {}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).starts_with(&format!("leader is now {follower}")),
        "{}",
        text(&o.stdout)
    );

    // Without a client certificate: refused, and raftctl says why.
    let no_cert = [
        "--endpoints",
        &https,
        "--cacert",
        &cacert,
        "get",
        "greeting",
    ];
    // (Once seen failing with no message at all: raftctl restored the
    // default SIGPIPE disposition, and the server closing the socket after
    // refusing the handshake killed it. Now it must always say why.)
    let o = raftctl(&no_cert);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("certificate"), "exit {:?}: {e:?}", o.status);
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // Plaintext raftctl against the TLS port: a clear error, no data.
    let o = raftctl(&["--endpoints", &follower_addr, "get", "greeting"]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("requires TLS"), "{e}");
    assert!(!text(&o.stdout).contains("hello"));
    // ... and a plaintext gRPC client gets UNAVAILABLE saying so.
    let status = cluster::kv(&follower_addr)
        .await
        .get(kvpb::GetRequest {
            key: b"greeting".to_vec(),
            consistency: 0,
        })
        .await
        .expect_err("plaintext must be refused");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("requires TLS"), "{status:?}");
    wait_for_log(
        &mut c,
        follower,
        "it speaks plaintext",
        Duration::from_secs(2),
    );

    // A client that trusts another CA refuses the members' certificate.
    let other = TestCa::new("other CA");
    let other_ca = pki.path().join("other-ca.crt");
    std::fs::write(&other_ca, &other.ca.cert).unwrap();
    let other_ca = other_ca.display().to_string();
    let o = raftctl(&[
        "--endpoints",
        &https,
        "--cacert",
        &other_ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "get",
        "greeting",
    ]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("not signed by a trusted CA"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_refuse_a_certificate_of_another_ca_or_an_expired_one() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster-a CA");
    let good = SecretDir::new(&pki.path().join("good"), &ca.ca, &ca.issue());
    let other = TestCa::new("cluster-b CA");
    let stranger = SecretDir::new(&pki.path().join("stranger"), &other.ca, &other.issue());
    let expired = SecretDir::new(&pki.path().join("expired"), &ca.ca, &ca.issue_expired());
    // Members 1-3 are good (a quorum of 5); 4 has a certificate of another
    // cluster's CA; 5 one of the right CA that has expired. Client ports are
    // plaintext here.
    let mut c = Cluster::start_with_each(5, |id| match id {
        4 => stranger.peer_flags(),
        5 => expired.peer_flags(),
        _ => good.peer_flags(),
    });
    let good_addrs: Vec<String> = (1..=3).map(|id| c.member(id).client_addr()).collect();
    let (leader, _) = cluster::wait_for_leader(&good_addrs, Duration::from_secs(15)).await;
    let mut kv = cluster::kv(&c.member(leader).client_addr()).await;
    put(&mut kv, "k", "v")
        .await
        .expect("a quorum of good members commits");

    // The good members say why they refuse each one...
    for (needle, what) in [
        ("not signed by a trusted CA", "the stranger"),
        ("has expired", "the expired member"),
    ] {
        let start = Instant::now();
        while !(1..=3).any(|id| c.log_of(id).contains(needle)) {
            if start.elapsed() > Duration::from_secs(5) {
                c.dump_logs();
                panic!("no good member logged why it refused {what} ({needle:?})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // ... and the stranger says why it refuses them.
    wait_for_log(
        &mut c,
        4,
        "not signed by a trusted CA",
        Duration::from_secs(5),
    );

    // Neither refused member learned anything.
    for id in [4, 5] {
        let s = cluster::status(&c.member(id).client_addr())
            .await
            .expect("refused member still answers on its client port");
        assert_eq!(s.commit_index, 0, "member {id} must not have joined: {s:?}");
        assert_ne!(s.role, adminpb::Role::Leader as i32);
    }

    // A TLS client against a plaintext port fails clearly, too.
    let cacert = good.ca().display().to_string();
    let addr = c.member(leader).client_addr();
    let o = raftctl(&["--endpoints", &addr, "--cacert", &cacert, "get", "k"]);
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("does not speak TLS"), "{e}");
}

/// Ends the TLS handshake with `addr` and returns the leaf certificate the
/// server presented.
async fn presented_cert(addr: &str, tls: &ClientTls) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let conn = tls.connect(tcp, "127.0.0.1").await.expect("handshake");
    match conn {
        kuberaft_node::tls::conn::Conn::Tls(s) => s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .expect("server certificate"),
        kuberaft_node::tls::conn::Conn::Plain(_) => panic!("no TLS"),
    }
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_certificates_while_writing_loses_nothing() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster-a CA");
    let mut secrets: Vec<SecretDir> = (1..=3)
        .map(|id| SecretDir::new(&pki.path().join(format!("m{id}")), &ca.ca, &ca.issue()))
        .collect();
    let args: Vec<Vec<String>> = secrets
        .iter()
        .map(|s| {
            let mut a = s.peer_flags();
            a.extend(s.client_flags(false));
            a.extend(["--tls-reload-interval-ms".to_string(), "200".to_string()]);
            a
        })
        .collect();
    let mut c = Cluster::start_with_each(3, |id| args[(id - 1) as usize].clone());
    let client_cert = ca.issue();
    let tls = ca.client(Some(&client_cert));
    let addrs = c.client_addrs();
    let leader = wait_for_leader_tls(&addrs, &tls, Duration::from_secs(15)).await;

    // A writer that keeps writing through the leader; every acknowledged key
    // must survive.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let addrs = addrs.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("key-{i:05}");
                // Any member: followers forward over TLS.
                let addr = &addrs[(i as usize) % addrs.len()];
                let mut kv = KvClient::new(tls_channel(addr, &tls));
                if tokio::time::timeout(Duration::from_secs(2), put(&mut kv, &key, "v"))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    acked.lock().unwrap().push(key);
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Rotate every member's certificate the way the kubelet updates a
    // Secret: new files, one symlink swap.
    let new_certs: Vec<_> = (0..3).map(|_| ca.issue()).collect();
    for (s, cert) in secrets.iter_mut().zip(&new_certs) {
        s.write(&ca.ca, cert);
    }
    for id in 1..=3 {
        wait_for_log(
            &mut c,
            id,
            "reloaded peer certificate",
            Duration::from_secs(5),
        );
        wait_for_log(
            &mut c,
            id,
            "reloaded client certificate",
            Duration::from_secs(5),
        );
    }
    // New connections get the new certificate, on both ports.
    for id in 1..=3u64 {
        let want = der_of(&new_certs[(id - 1) as usize].cert);
        let m = c.member(id);
        let (client, peer) = (m.client_addr(), format!("127.0.0.1:{}", m.peer_port));
        assert_eq!(
            presented_cert(&client, &tls).await,
            want,
            "client port of {id}"
        );
        assert_eq!(presented_cert(&peer, &tls).await, want, "peer port of {id}");
    }
    // A follower that restarts reconnects with its new certificate, and the
    // others accept it.
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    c.kill(follower);
    c.spawn(follower);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes went through: {}",
        acked.len()
    );
    let leader = wait_for_leader_tls(&addrs, &tls, Duration::from_secs(10)).await;
    let mut kv = KvClient::new(tls_channel(&c.member(leader).client_addr(), &tls));
    for key in &acked {
        assert!(
            get(&mut kv, key).await.is_some(),
            "acknowledged {key} was lost"
        );
    }
    // The restarted follower caught up over its new certificate.
    let want = tls_status(&c.member(leader).client_addr(), &tls)
        .await
        .unwrap()
        .commit_index;
    let start = Instant::now();
    loop {
        let s = tls_status(&c.member(follower).client_addr(), &tls).await;
        if s.is_some_and(|s| s.applied_index >= want) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "follower did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_tls_files_stop_the_member_with_one_line() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("cluster-a CA");
    let dir = pki.path();
    let (cert, key) = cert_files(dir, "member", &ca.issue());
    let (_, other_key) = cert_files(dir, "other", &ca.issue());
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, &ca.ca.cert).unwrap();
    let ca_file = ca_file.display().to_string();
    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "this is not PEM").unwrap();
    let garbage = garbage.display().to_string();
    let missing = dir.join("missing.crt").display().to_string();

    let cases: [(&str, [&str; 3], &str); 4] = [
        (
            "missing file",
            [&missing, &key, &ca_file],
            "cannot read --peer-cert-file",
        ),
        (
            "key of another certificate",
            [&cert, &other_key, &ca_file],
            "does not belong to --peer-cert-file",
        ),
        (
            "unparsable certificate",
            [&garbage, &key, &ca_file],
            "--peer-cert-file",
        ),
        (
            "unparsable CA",
            [&cert, &key, &garbage],
            "--peer-trusted-ca-file",
        ),
    ];
    for (what, [c, k, a], needle) in cases {
        let data = tempfile::tempdir().unwrap();
        let o = Command::new(node_binary())
            .args(["--id", "1", "--initial-members"])
            .arg(format!("1=m@127.0.0.1:{}/{}", free_port(), free_port()))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--peer-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--client-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--peer-cert-file",
                c,
                "--peer-key-file",
                k,
                "--peer-trusted-ca-file",
                a,
            ])
            .env("RUST_LOG", "off")
            .output()
            .expect("run kuberaft-node");
        assert!(!o.status.success(), "{what}: the member must not start");
        let e = text(&o.stderr);
        let last = e.trim().lines().last().unwrap_or_default();
        assert!(last.starts_with("kuberaft-node: "), "{what}: {e}");
        assert!(last.contains(needle), "{what}: {last}");
    }
}
