//! `sikkermail admin create` and `admin list`, on SQLite and (when
//! `TEST_DATABASE_URL` is set) PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;
mod site;

use site::sites;

#[test]
fn admin_create_and_list_on_every_backend() {
    for site in sites() {
        site.ok(&["init", "--org-name", "Advokatfirma", "--cvr", "12345678"]);
        let pw = [("ADMIN_PW", "Meget-hemmeligt-1")];
        let o = site.run_env(
            &[
                "admin",
                "create",
                "anne",
                "--role",
                "org-admin",
                "--password-env",
                "ADMIN_PW",
            ],
            &pw,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8(o.stdout).unwrap(),
            "anne\torg-admin\tcreated\n"
        );
        let o = site.run_env(
            &[
                "admin",
                "create",
                "bo",
                "--role",
                "auditor",
                "--password-env",
                "ADMIN_PW",
            ],
            &pw,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        // A second "anne", a short password, an unknown role, a missing variable.
        let o = site.run_env(
            &[
                "admin",
                "create",
                "anne",
                "--role",
                "auditor",
                "--password-env",
                "ADMIN_PW",
            ],
            &pw,
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
        let o = site.run_env(
            &[
                "admin",
                "create",
                "cecilie",
                "--role",
                "user-admin",
                "--password-env",
                "ADMIN_PW",
            ],
            &[("ADMIN_PW", "kort")],
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("at least 12"));
        let o = site.run_env(
            &[
                "admin",
                "create",
                "cecilie",
                "--role",
                "root",
                "--password-env",
                "ADMIN_PW",
            ],
            &pw,
        );
        assert_eq!(o.status.code(), Some(2));
        site.fails(
            &[
                "admin",
                "create",
                "cecilie",
                "--role",
                "user-admin",
                "--password-env",
                "NO_SUCH_VAR_HERE",
            ],
            2,
            "NO_SUCH_VAR_HERE",
        );

        let list = site.ok(&["admin", "list"]);
        let rows: Vec<Vec<&str>> = list.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(rows.len(), 2, "{list}");
        assert_eq!(rows[0][..2], ["anne", "org-admin"]);
        assert_eq!(rows[1][..2], ["bo", "auditor"]);
        assert!(rows.iter().all(|r| r[3] == "active"), "{list}");
        assert!(!list.contains("Meget-hemmeligt"));

        // The creation is audited, without the password.
        let audit = site.ok(&["audit"]);
        assert!(audit.contains("admin.create"), "{audit}");
        assert!(!audit.contains("Meget-hemmeligt"), "{audit}");
    }
}
