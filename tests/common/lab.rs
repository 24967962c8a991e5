//! A fake, DNSSEC-signed DNS hierarchy on loopback, started once per test binary.
//!
//! Layout (`B` is the block chosen by the test binary, see [`lab`]):
//!
//! | address        | daemon  | serves |
//! |----------------|---------|--------|
//! | `127.B.0.2:53` | nsd     | `.` (signed; trust anchor = its KSK) |
//! | `127.B.0.3:53` | nsd     | `test.`, `example.` (signed, DS for children) |
//! | `127.B.0.4:53` | nsd     | `alpha.test`, `beta.test`, `dnshost.example` (signed), `insecure.test` (unsigned), `expired.test` (signatures expired in 2020) |
//! | `127.B.0.5`    | unbound | validating recursor: `:53`, DoT `:853`, DoH `:443` (`/dns-query`), TLS name `dns.test` |
//! | `127.B.0.6`    | unbound | the same, but its certificate comes from another CA |
//!
//! Test names: `www.alpha.test A` (192.0.2.10, Secure), `chain.alpha.test A`
//! (CNAME `www.beta.test` → CNAME `host.dnshost.example` → 192.0.2.20, Secure),
//! `www.beta.test A` (glueless out-of-bailiwick NS), `big.alpha.test TXT` (20 × 190 bytes,
//! TC over UDP), `nope.alpha.test A` (NXDOMAIN, SOA minimum 300), `www.alpha.test AAAA`
//! (NODATA), `www.insecure.test A` (192.0.2.30, Insecure), `tampered.alpha.test A` (Bogus),
//! `x.dname.alpha.test A` (DNAME to `beta.test`, so CNAME to `x.beta.test`, 192.0.2.21),
//! `loop1.alpha.test A` (CNAME loop with `loop2`), `dangling.alpha.test A` (CNAME to a
//! name that does not exist), `x.wild.alpha.test A` (wildcard `*.wild`, 192.0.2.40),
//! `www.expired.test A` (192.0.2.50, Bogus: signatures expired), `nope.expired.test A`
//! (NXDOMAIN, Bogus).
//!
//! Zones are signed at start-up (`ldns-signzone`, 4-week validity), TLS certificates are
//! made at start-up (`openssl`), so nothing ever expires. Daemons are spawned from one
//! keeper thread with `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process.
//! Everything lives in `/tmp/dnsguard-lab-<B>/`; daemons left over from a crashed run of the
//! same block are killed at start-up.

use std::{
    fs,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};

/// How long a daemon may take to answer its first query before start-up fails.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running lab. Get it with [`lab`]; the daemons live as long as the test process.
#[derive(Debug)]
pub struct Lab {
    /// The address block: every address is `127.<block>.0.x`.
    pub block: u8,
    /// Directory holding zones, keys, certificates, configs and logs (`/tmp/dnsguard-lab-<block>`).
    pub dir: PathBuf,
    /// `127.B.0.2`: the root server (root hint for a recursor; port 53).
    pub root: IpAddr,
    /// Root trust anchor file (one DNSKEY line); usable with hickory `TrustAnchors::from_file`.
    pub anchor: PathBuf,
    /// Test CA certificate (PEM) that signed the certificate of [`Lab::resolver`].
    pub ca_pem: PathBuf,
    /// `127.B.0.5`: validating unbound; plain DNS :53, DoT :853, DoH :443 (`/dns-query`),
    /// TLS name `dns.test`.
    pub resolver: IpAddr,
    /// `127.B.0.6`: the same as [`Lab::resolver`], but its certificate comes from another CA.
    pub wrong_ca_resolver: IpAddr,
    /// The three NSD addresses: root, `test.`/`example.`, leaf zones.
    pub zone_servers: [IpAddr; 3],
    /// How long [`Lab::start`] took.
    pub startup: Duration,
}

/// The lab of this test binary, started on first use at `127.<block>.0.x`.
///
/// Give every test binary its own block (e.g. `const LAB_BLOCK: u8 = 21;`) so that test
/// binaries running at the same time never collide. Panics if called with two different
/// blocks in one process, or if the lab cannot start (the message holds the daemon log).
pub fn lab(block: u8) -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    let lab = LAB.get_or_init(|| Lab::start(block));
    assert_eq!(
        lab.block, block,
        "lab() called with two different blocks in one process"
    );
    lab
}

/// Address `127.<block>.0.<host>`.
fn ip(block: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, block, 0, host))
}

impl Lab {
    /// A dnsguard config resolving recursively from this lab's root, validating
    /// with its trust anchor when `dnssec`.
    pub fn recursive_config(&self, dnssec: bool) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\
             [resolver]\nmode = \"recursive\"\nroot_hints = [\"{}\"]\n\
             trust_anchor_file = \"{}\"\ndnssec = {dnssec}\n\
             recursor_allow_servers = [\"127.0.0.0/8\"]\ntimeout_ms = 4000\n",
            self.root,
            self.anchor.display()
        )
    }

    /// Builds and starts a lab at `127.<block>.0.x`. Prefer [`lab`], which does this once
    /// per process: a second `start` on the same block kills the first one's daemons.
    pub fn start(block: u8) -> Lab {
        assert!(block >= 1, "block 0 is 127.0.0.x, which other services use");
        let t0 = Instant::now();
        let dir = PathBuf::from(format!("/tmp/dnsguard-lab-{block}"));
        kill_stale(&dir);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        }
        for sub in [
            "zones",
            "keys",
            "tls",
            "nsd-root",
            "nsd-tld",
            "nsd-leaf",
            "unbound-5",
            "unbound-6",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("create lab dir");
        }

        // Certificates (openssl) in parallel with zone signing (ldns).
        thread::scope(|s| {
            let tls = s.spawn(|| make_tls(&dir.join("tls"), block));
            make_zones(&dir, block);
            tls.join().expect("TLS generation panicked");
        });

        let root = ip(block, 2);
        let zone_servers = [root, ip(block, 3), ip(block, 4)];
        let nsd = [
            ("nsd-root", zone_servers[0], &["."][..], "."),
            (
                "nsd-tld",
                zone_servers[1],
                &["test", "example"][..],
                "test.",
            ),
            (
                "nsd-leaf",
                zone_servers[2],
                &[
                    "alpha.test",
                    "beta.test",
                    "dnshost.example",
                    "insecure.test",
                    "expired.test",
                ][..],
                "alpha.test.",
            ),
        ];
        let mut pending = Vec::new();
        for (name, addr, zones, probe) in nsd {
            let conf = write_nsd_conf(&dir, name, addr, zones);
            let d = spawn_daemon(&dir, name, "nsd", &["-d", "-c", &conf]);
            pending.push((d, SocketAddr::new(addr, 53), probe, RecordType::SOA));
        }
        let resolver = ip(block, 5);
        let wrong_ca_resolver = ip(block, 6);
        for (name, addr, cert) in [
            ("unbound-5", resolver, "server"),
            ("unbound-6", wrong_ca_resolver, "wrong-server"),
        ] {
            let conf = write_unbound_conf(&dir, name, addr, cert, root);
            let d = spawn_daemon(&dir, name, "unbound", &["-d", "-c", &conf]);
            // `localhost.` is a built-in local zone: answers without touching the hierarchy.
            pending.push((d, SocketAddr::new(addr, 53), "localhost.", RecordType::A));
        }
        for (d, addr, name, rtype) in &pending {
            wait_ready(d, *addr, name, *rtype);
        }
        for addr in [resolver, wrong_ca_resolver] {
            for port in [853, 443] {
                TcpStream::connect_timeout(&SocketAddr::new(addr, port), Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("unbound {addr}:{port} not listening: {e}"));
            }
        }

        Lab {
            block,
            anchor: dir.join("root-anchor.key"),
            ca_pem: dir.join("tls/ca.pem"),
            dir,
            root,
            resolver,
            wrong_ca_resolver,
            zone_servers,
            startup: t0.elapsed(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Zones and signing
// ---------------------------------------------------------------------------------------

const ROOT_ZONE: &str = "$TTL 3600
.                    IN SOA a.root-servers.net. hostmaster.root-servers.net. 1 1800 900 604800 300
.                    IN NS  a.root-servers.net.
a.root-servers.net.  IN A   127.@B@.0.2
test.                IN NS  ns1.nic.test.
ns1.nic.test.        IN A   127.@B@.0.3
example.             IN NS  ns1.nic.example.
ns1.nic.example.     IN A   127.@B@.0.3
";

const TEST_ZONE: &str = "$TTL 3600
$ORIGIN test.
@            IN SOA ns1.nic.test. hostmaster.nic.test. 1 1800 900 604800 300
@            IN NS  ns1.nic
ns1.nic      IN A   127.@B@.0.3
alpha        IN NS  ns1.alpha
ns1.alpha    IN A   127.@B@.0.4
beta         IN NS  ns.dnshost.example.
insecure     IN NS  ns1.insecure
ns1.insecure IN A   127.@B@.0.4
expired      IN NS  ns1.expired
ns1.expired  IN A   127.@B@.0.4
";

const EXAMPLE_ZONE: &str = "$TTL 3600
$ORIGIN example.
@            IN SOA ns1.nic.example. hostmaster.nic.example. 1 1800 900 604800 300
@            IN NS  ns1.nic
ns1.nic      IN A   127.@B@.0.3
dnshost      IN NS  ns.dnshost
ns.dnshost   IN A   127.@B@.0.4
";

const ALPHA_ZONE: &str = "$TTL 3600
$ORIGIN alpha.test.
@            IN SOA ns1.alpha.test. hostmaster.alpha.test. 1 1800 900 604800 300
@            IN NS  ns1
ns1          IN A   127.@B@.0.4
www          IN A   192.0.2.10
chain        IN CNAME www.beta.test.
tampered     IN A   192.0.2.66
dname        IN DNAME beta.test.
loop1        IN CNAME loop2.alpha.test.
loop2        IN CNAME loop1.alpha.test.
dangling     IN CNAME nothere.alpha.test.
*.wild       IN A   192.0.2.40
";

const BETA_ZONE: &str = "$TTL 3600
$ORIGIN beta.test.
@            IN SOA ns.dnshost.example. hostmaster.beta.test. 1 1800 900 604800 300
@            IN NS  ns.dnshost.example.
www          IN CNAME host.dnshost.example.
x            IN A   192.0.2.21
";

const DNSHOST_ZONE: &str = "$TTL 3600
$ORIGIN dnshost.example.
@            IN SOA ns.dnshost.example. hostmaster.dnshost.example. 1 1800 900 604800 300
@            IN NS  ns
ns           IN A   127.@B@.0.4
host         IN A   192.0.2.20
";

const EXPIRED_ZONE: &str = "$TTL 3600
$ORIGIN expired.test.
@            IN SOA ns1.expired.test. hostmaster.expired.test. 1 1800 900 604800 300
@            IN NS  ns1
ns1          IN A   127.@B@.0.4
www          IN A   192.0.2.50
";

const INSECURE_ZONE: &str = "$TTL 3600
$ORIGIN insecure.test.
@            IN SOA ns1.insecure.test. hostmaster.insecure.test. 1 1800 900 604800 300
@            IN NS  ns1
ns1          IN A   127.@B@.0.4
www          IN A   192.0.2.30
";

/// File name of a zone inside `zones/`.
fn zone_file(zone: &str) -> String {
    if zone == "." {
        "root.zone".into()
    } else {
        format!("{zone}.zone")
    }
}

/// Writes all zones, signs them bottom-up, writes the trust anchor and tampers one record.
fn make_zones(dir: &Path, block: u8) {
    let zones = dir.join("zones");
    let keys = dir.join("keys");
    let b = block.to_string();
    let mut alpha = ALPHA_ZONE.to_string();
    for i in 1..=20 {
        // 20 TXT records of 190 characters each: about 4 KB, more than any UDP payload.
        alpha.push_str(&format!(
            "big          IN TXT \"{i:02}-{}\"\n",
            "x".repeat(187)
        ));
    }
    for (zone, text) in [
        (".", ROOT_ZONE),
        ("test", TEST_ZONE),
        ("example", EXAMPLE_ZONE),
        ("alpha.test", &alpha),
        ("beta.test", BETA_ZONE),
        ("dnshost.example", DNSHOST_ZONE),
        ("insecure.test", INSECURE_ZONE),
        ("expired.test", EXPIRED_ZONE),
    ] {
        fs::write(zones.join(zone_file(zone)), text.replace("@B@", &b)).expect("write zone");
    }

    let append = |zone: &str, text: &str| {
        let path = zones.join(zone_file(zone));
        let mut old = fs::read_to_string(&path).expect("read zone");
        old.push_str(text);
        fs::write(&path, old).expect("write zone");
    };
    let ds_alpha = sign(&keys, &zones, "alpha.test").0;
    let ds_beta = sign(&keys, &zones, "beta.test").0;
    let ds_dnshost = sign(&keys, &zones, "dnshost.example").0;
    // Signatures that expired years ago: every answer from it is Bogus.
    let expired = ["-i", "20200101000000", "-e", "20200201000000"];
    let ds_expired = sign_with(&keys, &zones, "expired.test", &expired).0;
    append("test", &(ds_alpha + &ds_beta + &ds_expired));
    append("example", &ds_dnshost);
    let ds_test = sign(&keys, &zones, "test").0;
    let ds_example = sign(&keys, &zones, "example").0;
    append(".", &(ds_test + &ds_example));
    let root_ksk = sign(&keys, &zones, ".").1;
    fs::copy(
        keys.join(format!("{root_ksk}.key")),
        dir.join("root-anchor.key"),
    )
    .expect("copy trust anchor");

    // Change the data of one signed record and keep its signature: Bogus.
    let signed = zones.join("alpha.test.zone.signed");
    let text = fs::read_to_string(&signed).expect("read signed zone");
    let mut tampered = 0;
    let out: String = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 5 && f[0] == "tampered.alpha.test." && f[3] == "A" {
                tampered += 1;
                format!("{}\t{}\tIN\tA\t192.0.2.99\n", f[0], f[1])
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(
        tampered,
        1,
        "tampered record not found in {}",
        signed.display()
    );
    fs::write(&signed, out).expect("write tampered zone");

    // insecure.test is served unsigned and gets no DS.
    fs::copy(
        zones.join("insecure.test.zone"),
        zones.join("insecure.test.zone.signed"),
    )
    .expect("copy insecure zone");
}

/// Signs `zones/<zone>.zone` into `<zone>.zone.signed`; returns (DS record line, KSK base name).
fn sign(keys: &Path, zones: &Path, zone: &str) -> (String, String) {
    sign_with(keys, zones, zone, &[])
}

/// [`sign`] with extra `ldns-signzone` options (e.g. a validity period).
fn sign_with(keys: &Path, zones: &Path, zone: &str, options: &[&str]) -> (String, String) {
    let keygen = |ksk: bool| {
        let mut c = Command::new("ldns-keygen");
        c.current_dir(keys).args(["-a", "ECDSAP256SHA256"]);
        if ksk {
            c.arg("-k");
        }
        run(c.arg(zone)).trim().to_string()
    };
    let ksk = keygen(true);
    let zsk = keygen(false);
    let file = zones.join(zone_file(zone));
    let mut signed = file.clone().into_os_string();
    signed.push(".signed");
    run(Command::new("ldns-signzone")
        .current_dir(keys)
        .args(options)
        .arg("-f")
        .arg(&signed)
        .arg(&file)
        .args([&zsk, &ksk]));
    let ds = run(Command::new("ldns-key2ds").current_dir(keys).args([
        "-n",
        "-2",
        &format!("{ksk}.key"),
    ]));
    (ds, ksk)
}

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Makes `ca.pem` + `server.{pem,key}` (for `dns.test`/127.B.0.5) and, from a second CA,
/// `wrong-ca.pem` + `wrong-server.{pem,key}` (for `dns.test`/127.B.0.6).
fn make_tls(tls: &Path, block: u8) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(tls).args(args));
    };
    for (ca, cn, leaf, host) in [
        ("ca", "test CA", "server", 5),
        ("wrong-ca", "wrong test CA", "wrong-server", 6),
    ] {
        let ca_key = format!("{ca}.key");
        let ca_pem = format!("{ca}.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "3650",
            "-keyout",
            &ca_key,
            "-out",
            &ca_pem,
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        let key = format!("{leaf}.key");
        let csr = format!("{leaf}.csr");
        let ext = format!("{leaf}.ext");
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=dns.test",
        ]);
        fs::write(
            tls.join(&ext),
            format!(
                "subjectAltName=DNS:dns.test,IP:127.{block}.0.{host}\n\
                 basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write leaf.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "825",
            "-out",
            &format!("{leaf}.pem"),
            "-extfile",
            &ext,
        ]);
    }
}

// ---------------------------------------------------------------------------------------
// Daemon configuration
// ---------------------------------------------------------------------------------------

/// Writes `<name>/nsd.conf` for one NSD instance; returns its path.
fn write_nsd_conf(dir: &Path, name: &str, addr: IpAddr, zones: &[&str]) -> String {
    let d = dir.join(name);
    let d = d.display();
    let mut conf = format!(
        "server:
  ip-address: {addr}
  port: 53
  username: \"\"
  chroot: \"\"
  zonesdir: {zdir}
  database: \"\"
  pidfile: {d}/nsd.pid
  xfrdfile: {d}/xfrd.state
  zonelistfile: {d}/zone.list
  xfrdir: {d}
  logfile: {d}/nsd.log
  server-count: 1
  do-ip6: no
  reuseport: no
remote-control:
  control-enable: no
",
        zdir = dir.join("zones").display()
    );
    for z in zones {
        let zname = if *z == "." {
            ".".to_string()
        } else {
            format!("{z}.")
        };
        conf.push_str(&format!(
            "zone:\n  name: \"{zname}\"\n  zonefile: {}.signed\n",
            zone_file(z)
        ));
    }
    let path = format!("{d}/nsd.conf");
    fs::write(&path, conf).expect("write nsd.conf");
    path
}

/// Writes `<name>/unbound.conf` (and root hints); returns the config path.
fn write_unbound_conf(dir: &Path, name: &str, addr: IpAddr, cert: &str, root: IpAddr) -> String {
    let d = dir.join(name);
    fs::write(
        d.join("root.hints"),
        format!(
            ".\t3600000\tIN\tNS\ta.root-servers.net.\na.root-servers.net.\t3600000\tIN\tA\t{root}\n"
        ),
    )
    .expect("write root.hints");
    let tls = dir.join("tls");
    let (d, tls, top) = (d.display(), tls.display(), dir.display());
    let conf = format!(
        "server:
  interface: {addr}@53
  interface: {addr}@853
  interface: {addr}@443
  tls-port: 853
  https-port: 443
  tls-service-key: \"{tls}/{cert}.key\"
  tls-service-pem: \"{tls}/{cert}.pem\"
  do-not-query-localhost: no
  local-zone: \"test.\" nodefault
  root-hints: \"{d}/root.hints\"
  trust-anchor-file: \"{top}/root-anchor.key\"
  username: \"\"
  chroot: \"\"
  directory: \"{d}\"
  pidfile: \"{d}/unbound.pid\"
  logfile: \"{d}/unbound.log\"
  use-syslog: no
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  do-ip6: no
  num-threads: 1
  val-log-level: 2
remote-control:
  control-enable: no
"
    );
    let path = format!("{d}/unbound.conf");
    fs::write(&path, conf).expect("write unbound.conf");
    path
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Runs a command to completion; returns stdout, panics with stderr on failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (package installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A daemon started by the keeper thread.
#[derive(Debug)]
struct Daemon {
    name: String,
    pid: u32,
    /// Files whose contents go into the panic message if the daemon does not come up.
    logs: Vec<PathBuf>,
}

impl Daemon {
    fn logs(&self) -> String {
        let mut s = String::new();
        for l in &self.logs {
            let text = fs::read_to_string(l).unwrap_or_default();
            s.push_str(&format!("--- {}:\n{text}\n", l.display()));
        }
        s
    }
}

/// A spawn request for the keeper thread.
struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<u32>>,
}

/// The channel to the keeper thread, which spawns every daemon and never exits.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits. Test threads end
/// after each test, so daemons are forked from this one thread, which lives until the
/// process ends (its receiver never sees a disconnect: the sender is in a static).
fn keeper() -> &'static mpsc::Sender<SpawnRequest> {
    static KEEPER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("lab-keeper".into())
            .spawn(move || {
                let mut children = Vec::new();
                while let Ok(mut req) = rx.recv() {
                    let parent = std::process::id();
                    // SAFETY: only async-signal-safe libc calls between fork and exec.
                    unsafe {
                        req.cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            // The test process died between fork and prctl: go too.
                            if libc::getppid() as u32 != parent {
                                return Err(io::Error::other("parent gone"));
                            }
                            // Own process group, so a stale daemon's helpers can be found.
                            libc::setpgid(0, 0);
                            Ok(())
                        });
                    }
                    let res = req.cmd.spawn().map(|child| {
                        let id = child.id();
                        children.push(child);
                        id
                    });
                    let _ = req.reply.send(res);
                }
            })
            .expect("spawn lab keeper thread");
        tx
    })
}

/// Starts `program args` in the background (from the keeper thread), output to `<dir>/<name>.out`.
fn spawn_daemon(dir: &Path, name: &str, program: &str, args: &[&str]) -> Daemon {
    let out_path = dir.join(format!("{name}.out"));
    let out = fs::File::create(&out_path).expect("create daemon output file");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    let (tx, rx) = mpsc::channel();
    keeper()
        .send(SpawnRequest { cmd, reply: tx })
        .expect("keeper thread gone");
    let pid = rx
        .recv()
        .expect("keeper thread gone")
        .unwrap_or_else(|e| panic!("cannot start {program} (package installed?): {e}"));
    let log = if program == "nsd" {
        "nsd.log"
    } else {
        "unbound.log"
    };
    Daemon {
        name: name.into(),
        pid,
        logs: vec![out_path, dir.join(name).join(log)],
    }
}

/// Process state letter from `/proc/<pid>/stat` (`None` if the process is gone).
fn proc_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// True if the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Kills every process (other than ours) whose command line mentions `dir`: daemons of a
/// previous run of the same block that did not die (e.g. the test process was SIGKILLed
/// while a daemon was forking). Waits (bounded) until they are gone.
fn kill_stale(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let mut killed = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let mut cmdline = Vec::new();
        if fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_end(&mut cmdline))
            .is_err()
        {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) && alive(pid) {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "stale lab daemons {killed:?} do not die"
        );
        thread::yield_now();
    }
}

/// Sends one UDP query (RD set) and waits up to `timeout` for the matching response.
fn probe(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> io::Result<Message> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.connect(server)?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).map_err(io::Error::other)?,
        rtype,
    ));
    sock.send(&msg.to_vec().map_err(io::Error::other)?)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf)?;
        if let Ok(resp) = Message::from_vec(&buf[..n])
            && resp.metadata.id == msg.metadata.id
        {
            return Ok(resp);
        }
    }
}

/// Polls `server` with a real query until it answers NOERROR; panics with the logs after
/// [`READY_TIMEOUT`] or as soon as the daemon has exited.
fn wait_ready(d: &Daemon, server: SocketAddr, name: &str, rtype: RecordType) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match probe(server, name, rtype, Duration::from_millis(200)) {
            Ok(m) if m.metadata.response_code == ResponseCode::NoError => return,
            Ok(m) => format!("answered {}", m.metadata.response_code),
            Err(e) => e.to_string(),
        };
        if !alive(d.pid) {
            panic!("{} ({server}) exited during start-up\n{}", d.name, d.logs());
        }
        if Instant::now() > deadline {
            panic!(
                "{} ({server}) not ready after {READY_TIMEOUT:?}: {last}\n{}",
                d.name,
                d.logs()
            );
        }
        if last.contains("refused") {
            // Nothing bound yet (ECONNREFUSED comes back at once): pause between polls.
            thread::park_timeout(Duration::from_millis(20));
        }
    }
}
