//! A data directory for end-to-end tests of the binary, on SQLite or on a
//! fresh PostgreSQL database of its own (dropped afterwards).

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::{sh, sh_status};

/// One data directory, on SQLite or pointing at a fresh PostgreSQL database.
pub struct Site {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub db_url: Option<String>,
    pub pg_name: Option<String>,
}

impl Site {
    pub fn new(postgres: bool) -> Option<Site> {
        let tmp = tempfile::Builder::new()
            .prefix("site-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dir = tmp.path().join("data");
        let (db_url, pg_name) = if postgres {
            let admin = std::env::var("TEST_DATABASE_URL").ok()?;
            let mut b = [0u8; 6];
            openssl::rand::rand_bytes(&mut b).unwrap();
            let name = format!(
                "sikkermail_cli_{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            );
            sh(
                tmp.path(),
                &format!("psql '{admin}' -qc 'CREATE DATABASE {name}'"),
            );
            let base = admin.rsplit_once('/').unwrap().0.to_string();
            (Some(format!("{base}/{name}")), Some(name))
        } else {
            (None, None)
        };
        Some(Site {
            _tmp: tmp,
            dir,
            db_url,
            pg_name,
        })
    }

    /// Another node on this site's PostgreSQL database: a data directory of
    /// its own, holding a copy of this site's master key.
    pub fn second_node(&self) -> Site {
        let tmp = tempfile::Builder::new()
            .prefix("node-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let n = Site {
            _tmp: tmp,
            dir,
            db_url: self.db_url.clone(),
            pg_name: None,
        };
        n.copy_master_key_from(self);
        n
    }

    /// What an operator does after a rotation on another node.
    pub fn copy_master_key_from(&self, other: &Site) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let key = fs::read(other.dir.join("master.key")).unwrap();
        let tmp = self.dir.join("master.key.copy");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .unwrap();
        f.write_all(&key).unwrap();
        fs::rename(&tmp, self.dir.join("master.key")).unwrap();
    }

    /// The command with this site's data directory and database.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sikkermail"));
        c.args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .env_remove("SIKKERMAIL_MASTER_KEY");
        if let Some(u) = &self.db_url {
            c.arg("--database-url").arg(u);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// Starts the command in the background, its output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args, &[("P12_PW", "Hemmelig-42")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[("P12_PW", "Hemmelig-42")])
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str], code: i32, msg: &str) {
        let o = self.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: wanted {msg:?} in {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.parent().unwrap().join(name).display().to_string()
    }

    /// The certificate PEM that `cert show` prints last.
    /// `init` of the test firm, "Advokatfirma Jørgensen", CVR 12345678.
    pub fn init_firm(&self) {
        self.ok(&[
            "init",
            "--org-name",
            "Advokatfirma Jørgensen",
            "--cvr",
            "12345678",
        ]);
    }

    /// Issues the shared mailbox's organisation certificate ("Fælles
    /// postkasse") for `email`; its id.
    pub fn issue_mailbox_cert(&self, email: &str) -> String {
        first_field(&self.ok(&[
            "cert",
            "issue",
            "--kind",
            "organisation",
            "--name",
            "Fælles postkasse",
            "--email",
            email,
        ]))
    }

    pub fn pem(&self, id: &str) -> String {
        let out = self.ok(&["cert", "show", id]);
        out[out.find("-----BEGIN CERTIFICATE-----").unwrap()..].to_string()
    }

    /// The sqlite file as bytes, or every sealed value from PostgreSQL.
    pub fn database_bytes(&self) -> Vec<u8> {
        match &self.db_url {
            None => fs::read(self.dir.join("sikkermail.db")).unwrap(),
            Some(u) => sh(
                Path::new("/"),
                &format!(
                    "psql '{u}' -Atc \"SELECT encode(sealed, 'hex') FROM private_keys\" | xxd -r -p"
                ),
            )
            .stdout,
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let (Some(n), Ok(admin)) = (&self.pg_name, std::env::var("TEST_DATABASE_URL")) {
            let _ = sh_status(
                Path::new("/"),
                &format!("psql '{admin}' -qc 'DROP DATABASE IF EXISTS {n} WITH (FORCE)'"),
            );
        }
    }
}

pub fn sites() -> Vec<Site> {
    let mut v = vec![Site::new(false).unwrap()];
    match Site::new(true) {
        Some(s) => v.push(s),
        None => {
            assert!(
                !crate::common::peers_required(),
                "TEST_DATABASE_URL is not set, and SIKKERMAIL_REQUIRE_PEERS=1 requires PostgreSQL"
            );
            eprintln!(
                "!!! SKIPPING PostgreSQL: TEST_DATABASE_URL not set: these commands are tested on SQLite only"
            )
        }
    }
    v
}

pub fn first_field(line: &str) -> String {
    line.split('\t').next().unwrap().trim().to_string()
}

/// A retired OCES2-style key: VOCES subject, long expired, in an RC2-40
/// PKCS#12 as NemID exported them. Returns (p12 path, cert path).
pub fn make_oces2_p12(dir: &Path) -> (String, String) {
    sh(
        dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout oces2.key -out oces2.crt -days 30 -sha256 \
        -subj '/C=DK/O=Advokatfirma Jørgensen \\/\\/ CVR:12345678/CN=Advokatfirma Jørgensen - VOCES/serialNumber=CVR:12345678-UID:1234567890' -utf8 2>/dev/null",
    );
    sh(
        dir,
        "openssl pkcs12 -export -legacy -certpbe PBE-SHA1-RC2-40 -keypbe PBE-SHA1-3DES -in oces2.crt -inkey oces2.key -passout pass:gammel -out oces2.p12",
    );
    (
        dir.join("oces2.p12").display().to_string(),
        dir.join("oces2.crt").display().to_string(),
    )
}
