//! The Debian package (README, "Installing the package"): `cargo deb`
//! packages the binary these tests run (the dev build: CI makes no release
//! build), lintian finds nothing, and the package unpacked into a throw-away
//! root works there: the maintainer scripts do what they should (run with
//! stand-ins for the commands that would change this machine's users), the
//! unit passes `systemd-analyze verify` with an exposure below 2.0, and the
//! unpacked `sikkermail serve --check` accepts the unpacked configuration.
//!
//! Peers: `cargo deb` (cargo install cargo-deb --locked
//! --no-default-features), dpkg-deb, lintian, systemd-analyze.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ROOT_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

/// `cargo deb` present? A loud skip, or a failure in CI.
fn cargo_deb() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let found = Command::new(cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if common::peers_required() {
            panic!("peer `cargo deb` is missing and SIKKERMAIL_REQUIRE_PEERS=1");
        }
        eprintln!(
            "!!! SKIPPING: `cargo deb` is not installed (cargo install cargo-deb --locked --no-default-features)"
        );
    }
    found
}

fn peers() -> bool {
    // Every check, so that all that is missing is named at once.
    let found = [
        cargo_deb(),
        common::peer("dpkg-deb"),
        common::peer("lintian"),
        common::peer("systemd-analyze"),
    ];
    found.iter().all(|f| *f)
}

/// The package of the binary under test, made once for every test here.
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        // target/<profile>/sikkermail: cargo deb finds it there again with
        // the same target directory and profile, and builds nothing.
        let bin = Path::new(env!("CARGO_BIN_EXE_sikkermail"));
        let profile_dir = bin.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        let deb = out.join("sikkermail.deb");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The dev build's full debug info (200 MB) is stripped, not kept
        // in /usr/lib/debug as the release's line tables are: a minute less
        // of compressing. --fast: quicker compression.
        run(Command::new(cargo)
            .current_dir(ROOT_DIR)
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["deb", "--no-build", "--offline", "--fast", "--strip"])
            .args(["--no-separate-debug-symbols", "--no-compress-debug-symbols"])
            .args(["--profile", profile, "--output"])
            .arg(&deb));
        deb
    })
}

/// The package unpacked into a fresh directory: the installed files
/// (`dpkg-deb -x`) and, in `DEBIAN/`, its control files.
fn unpack(into: &Path) {
    let deb = package();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into));
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb)
        .arg(into.join("DEBIAN")));
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The files, the control fields and lintian.
#[test]
fn package_holds_what_an_administrator_expects_and_lintian_is_clean() {
    if !peers() {
        return;
    }
    let deb = package();
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(deb)).stdout);
    for f in [
        "./usr/bin/sikkermail",
        "./etc/sikkermail/sikkermail.toml",
        "./usr/lib/systemd/system/sikkermail.service",
        "./usr/share/doc/sikkermail/README.md",
        "./usr/share/doc/sikkermail/examples/sikkermail.example.toml",
        "./usr/share/doc/sikkermail/examples/policy.toml",
        "./usr/share/doc/sikkermail/examples/low-ports.conf",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {f}"))),
            "{f} missing from the package:\n{listing}"
        );
    }
    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(deb)).stdout);
    assert!(info.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION"))));
    // adduser for postinst, procps for the unit's /bin/kill.
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"));
    let depends = depends.unwrap_or_default();
    assert!(
        depends.contains("adduser") && depends.contains("procps"),
        "{info}"
    );
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    assert_eq!(
        fs::read_to_string(dir.path().join("DEBIAN/conffiles")).unwrap(),
        "/etc/sikkermail/sikkermail.toml\n"
    );

    // Warnings fail too; the overrides shipped with the package say why
    // each one does not apply.
    let o = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        o.status.success()
            && !out
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian:\n{out}{}",
        text(&o.stderr)
    );
}

/// Stand-ins for the commands that would change this machine (users,
/// ownership, systemd): each writes its arguments to `log`; `install -d`
/// makes the directory with its mode (not its owner).
fn stand_ins(dir: &Path, log: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let log = log.display();
    let record = |name: &str, rest: &str| {
        let p = dir.join(name);
        fs::write(
            &p,
            format!("#!/bin/sh\necho \"{name} $*\" >> '{log}'\n{rest}"),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    };
    for c in ["adduser", "chown", "deb-systemd-invoke", "systemctl"] {
        record(c, "exit 0\n");
    }
    // A first installation: the unit was never enabled; no override made.
    record(
        "deb-systemd-helper",
        "case \"$*\" in *debian-installed*|*was-enabled*) exit 1;; esac\n",
    );
    record("dpkg-statoverride", "exit 1\n");
    record(
        "install",
        "while [ $# -gt 0 ]; do case \"$1\" in -m) m=$2; shift 2;; -o|-g) shift 2;; -d) shift;; *) d=$1; shift;; esac; done\nmkdir -p \"$d\" && chmod \"$m\" \"$d\"\n",
    );
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// A maintainer script from the package with the system's paths moved into
/// `root`, run as dpkg would.
fn maintainer_script(root: &Path, name: &str, path: &str, args: &[&str]) -> Output {
    let script = fs::read_to_string(root.join("DEBIAN").join(name)).unwrap();
    let r = root.display();
    let moved = script
        .replace("/etc/sikkermail/", &format!("{r}/etc/sikkermail/"))
        .replace("/var/lib/sikkermail", &format!("{r}/var/lib/sikkermail"));
    let file = root.join(format!("{name}.moved"));
    fs::write(&file, moved).unwrap();
    Command::new("sh")
        .arg("-e")
        .arg(&file)
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// postinst makes the user, the data directory (0700, the user's) and
/// the configuration root:sikkermail 0640; again on an upgrade; postrm
/// purge keeps a data directory with anything in it.
#[test]
fn maintainer_scripts_make_the_user_and_keep_the_keys() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    unpack(&root);
    let log = dir.path().join("log");
    let path = stand_ins(&dir.path().join("bin"), &log);
    let r = root.display();
    let state = root.join("var/lib/sikkermail");
    let conf = root.join("etc/sikkermail/sikkermail.toml");

    for args in [&["configure"][..], &["configure", "0.1.0-1"]] {
        let _ = fs::remove_file(&log);
        let o = maintainer_script(&root, "postinst", &path, args);
        assert!(o.status.success(), "postinst {args:?}: {}", text(&o.stderr));
        let done = fs::read_to_string(&log).unwrap();
        for expected in [
            format!(
                "adduser --system --group --home {r}/var/lib/sikkermail --no-create-home --quiet sikkermail"
            ),
            format!("install -d -o sikkermail -g sikkermail -m 0700 {r}/var/lib/sikkermail"),
            format!("chown root:sikkermail {r}/etc/sikkermail/sikkermail.toml"),
        ] {
            assert!(
                done.lines().any(|l| l == expected),
                "postinst {args:?} did not run `{expected}`:\n{done}"
            );
        }
        // Installed, not enabled nor started: the administrator
        // configures first.
        assert!(
            !done.contains("helper enable") && !done.contains("invoke start"),
            "{done}"
        );
        assert_eq!(mode(&state), 0o700, "{}", state.display());
        assert_eq!(mode(&conf), 0o640, "{}", conf.display());
    }

    let o = maintainer_script(&root, "prerm", &path, &["remove"]);
    assert!(o.status.success(), "prerm: {}", text(&o.stderr));
    let o = maintainer_script(&root, "postrm", &path, &["remove"]);
    assert!(o.status.success(), "postrm remove: {}", text(&o.stderr));
    assert!(state.is_dir());

    // A purge never deletes keys.
    fs::write(state.join("master.key"), "k").unwrap();
    let o = maintainer_script(&root, "postrm", &path, &["purge"]);
    assert!(o.status.success(), "postrm purge: {}", text(&o.stderr));
    assert!(state.join("master.key").exists());
    assert!(
        text(&o.stderr).contains("left in place"),
        "{}",
        text(&o.stderr)
    );
    // An empty one goes.
    fs::remove_file(state.join("master.key")).unwrap();
    let o = maintainer_script(&root, "postrm", &path, &["purge"]);
    assert!(o.status.success(), "postrm purge: {}", text(&o.stderr));
    assert!(!state.exists());
}

/// A root in which `systemd-analyze --root` finds the unit, the programs
/// it runs and the system's own units it orders itself against.
fn unit_root(root: &Path) {
    unpack(root);
    let units = root.join("usr/lib/systemd/system");
    for e in fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let e = e.unwrap();
        let to = units.join(e.file_name());
        if !to.exists() && e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to).unwrap();
        }
    }
    fs::copy(
        fs::canonicalize("/bin/kill").unwrap(),
        root.join("usr/bin/kill"),
    )
    .unwrap();
    if !root.join("bin").exists() {
        symlink("usr/bin", root.join("bin")).unwrap();
    }
}

fn analyze(root: &Path, args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .arg("sikkermail.service")
        .output()
        .unwrap()
}

/// `systemd-analyze verify` says nothing; the exposure is below 2.0, with
/// the low-ports drop-in too.
#[test]
fn unit_verifies_and_is_confined() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    unit_root(root);
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/sikkermail.service")).unwrap();
    for line in [
        "User=sikkermail",
        "ExecStart=/usr/bin/sikkermail serve --config /etc/sikkermail/sikkermail.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "After=network-online.target postgresql.service",
        "StateDirectory=sikkermail",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in the unit");
    }

    let dropin = root.join("etc/systemd/system/sikkermail.service.d");
    for with_dropin in [false, true] {
        if with_dropin {
            fs::create_dir_all(&dropin).unwrap();
            fs::copy(
                root.join("usr/share/doc/sikkermail/examples/low-ports.conf"),
                dropin.join("low-ports.conf"),
            )
            .unwrap();
        }
        let o = analyze(root, &["verify"]);
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "systemd-analyze verify (drop-in: {with_dropin}):\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        // --threshold=20: fails above an exposure of 2.0.
        let o = analyze(root, &["security", "--offline=true", "--threshold=20"]);
        let out = text(&o.stdout);
        let overall = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_default();
        eprintln!("drop-in {with_dropin}: {overall}");
        assert!(
            o.status.success(),
            "exposure above 2.0 (drop-in: {with_dropin}):\n{out}{}",
            text(&o.stderr)
        );
    }
    let with = fs::read_to_string(dropin.join("low-ports.conf")).unwrap();
    assert!(
        with.lines()
            .any(|l| l == "AmbientCapabilities=CAP_NET_BIND_SERVICE")
    );
}

/// The unpacked binary checks the unpacked configuration, its data_dir
/// moved into the root (and ports any free ones: other tests run).
#[test]
fn installed_serve_check_accepts_the_installed_configuration() {
    if !peers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    unpack(root);
    let state = root.join("var/lib/sikkermail");
    fs::create_dir_all(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let conf = root.join("etc/sikkermail/sikkermail.toml");
    let original = fs::read_to_string(&conf).unwrap();
    let package_line = "data_dir = \"/var/lib/sikkermail\"";
    assert!(original.lines().any(|l| l == package_line));
    fs::write(
        &conf,
        original.replace(package_line, &format!("data_dir = \"{}\"", state.display())),
    )
    .unwrap();

    let mut cmd = Command::new(root.join("usr/bin/sikkermail"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SIKKERMAIL_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd
        .current_dir(root)
        .env("SIKKERMAIL_INBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_OUTBOUND_LISTEN", "127.0.0.1:0")
        .env("SIKKERMAIL_HTTP_LISTEN", "127.0.0.1:0")
        .args(["serve", "--check", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        o.status.success() && text(&o.stdout).contains("configuration OK"),
        "serve --check:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // --check writes nothing.
    assert_eq!(fs::read_dir(&state).unwrap().count(), 0);
}

/// debian/sikkermail.toml is what debian/make-conffile makes of
/// sikkermail.example.toml: the example with every key commented out but
/// data_dir, so that the two never drift apart.
#[test]
fn conffile_is_the_example_commented_out() {
    let o = run(Command::new("sh").arg(format!("{ROOT_DIR}/debian/make-conffile")));
    let shipped = fs::read_to_string(format!("{ROOT_DIR}/debian/sikkermail.toml")).unwrap();
    assert!(
        text(&o.stdout) == shipped,
        "debian/sikkermail.toml is out of date: sh debian/make-conffile > debian/sikkermail.toml"
    );
    for l in shipped.lines() {
        let l = l.trim();
        assert!(
            l.is_empty()
                || l.starts_with('#')
                || (l.starts_with('[') && l.ends_with(']'))
                || l == "data_dir = \"/var/lib/sikkermail\"",
            "not commented out: {l}"
        );
    }
}

/// The package's version is the workspace's; debian/changelog's first
/// entry names it (lintian reads it from there).
#[test]
fn changelog_names_the_version() {
    let changelog = fs::read_to_string(format!("{ROOT_DIR}/debian/changelog")).unwrap();
    let first = changelog.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("sikkermail ({}-1) ", env!("CARGO_PKG_VERSION"))),
        "debian/changelog starts with `{first}`: add an entry for this version"
    );
}
