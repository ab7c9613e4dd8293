//! MySQL / MariaDB URLs: `mysql://`, `mariadb://` and SQLAlchemy's `mysql+pymysql://`
//! (Nova's usual `[database] connection`), normalized to the `mysql://` form the
//! pure-Rust client (mysql_async) reads.

use servicegroup_core::{DatabaseUrl, Result};

use super::{bad_url, percent_decode, shown, ServerUrl, URL_KEY};

/// A MySQL/MariaDB URL (`mysql://user:password@host:port/db?params`).
pub type MysqlUrl = ServerUrl;

/// Query parameters mysql_async understands and that make sense here; others
/// (SQLAlchemy's and PyMySQL's, such as `charset=utf8`) are dropped with a warning.
/// `stmt_cache_size` and `client_found_rows` are set by the driver and not taken.
const MYSQL_PARAMS: &[&str] = &[
    "socket",
    "prefer_socket",
    "tcp_keepalive",
    "tcp_nodelay",
    "max_allowed_packet",
    "wait_timeout",
    "secure_auth",
    "enable_cleartext_plugin",
    "require_ssl",
    "verify_ca",
    "verify_identity",
];

/// Parses what follows `mysql:` / `mariadb:` / `mysql+pymysql:`.
pub(super) fn parse_mysql(url: &DatabaseUrl, rest: &str) -> Result<MysqlUrl> {
    let Some(after) = rest.strip_prefix("//") else {
        return Err(bad_url(
            url,
            "a MySQL/MariaDB URL starts with mysql:// (or mariadb://)",
        ));
    };
    let (base, query) = match after.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (after, None),
    };
    let authority = base.split('/').next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if hostport.is_empty() {
        return Err(bad_url(
            url,
            "it names no host (mysql://user:password@host:port/dbname)",
        ));
    }
    let database = base.split_once('/').map(|(_, db)| db).unwrap_or("");
    if database.is_empty() {
        return Err(bad_url(
            url,
            "it names no database (mysql://user:password@host:port/dbname)",
        ));
    }
    let port = if hostport.starts_with('[') {
        hostport.rsplit_once("]:").map(|(_, p)| p)
    } else {
        hostport.rsplit_once(':').map(|(_, p)| p)
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(bad_url(url, format!("the port {port:?} is not a number")));
        }
    }
    let mut params = Vec::new();
    let mut dropped = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(bad_url(
                url,
                format!(
                    "query parameter {:?} has no value",
                    percent_decode(pair.split('=').next().unwrap_or(""))
                ),
            ));
        };
        let (k, v) = (percent_decode(k), percent_decode(v));
        match k.as_str() {
            // PyMySQL's name for the socket path.
            "unix_socket" => params.push(("socket".to_owned(), v)),
            k if MYSQL_PARAMS.contains(&k) => params.push((k.to_owned(), v)),
            _ => dropped.push(k),
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(
            url = %shown(url),
            ignored = ?dropped,
            "ignoring query parameters the MySQL client does not know in `{URL_KEY}`: {dropped:?}"
        );
    }
    Ok(ServerUrl {
        scheme: "mysql",
        base: base.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_any, Target};
    use servicegroup_core::{DatabaseUrl, ErrorKind};

    #[test]
    fn mysql_forms() {
        for url in [
            "mysql://nova:s3cr%3At@db.example:3306/nova",
            "mariadb://nova:s3cr%3At@db.example:3306/nova",
            "MYSQL+PYMYSQL://nova:s3cr%3At@db.example:3306/nova?charset=utf8",
            "mysql+mysqldb://nova:s3cr%3At@db.example:3306/nova",
        ] {
            let Target::Mysql(my) = parse_any(&DatabaseUrl::new(url)).unwrap() else {
                panic!("{url}")
            };
            assert_eq!(
                my.redacted(),
                "mysql://nova:***@db.example:3306/nova",
                "{url}"
            );
            assert_eq!(
                my.secrets(),
                vec!["s3cr%3At".to_owned(), "s3cr:t".to_owned()]
            );
            assert!(!format!("{my:?}").contains("s3cr"));
            assert_eq!(
                my.render(&[("prefer_socket", "false".into())]),
                "mysql://nova:s3cr%3At@db.example:3306/nova?prefer_socket=false"
            );
        }
        // Nova's usual form: no port; PyMySQL's unix_socket becomes `socket`.
        let Target::Mysql(my) = parse_any(&DatabaseUrl::new(
            "mysql+pymysql://nova:pw@controller/nova?charset=utf8&unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(my.param("socket"), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(my.param("charset"), None);
        assert_eq!(
            my.redacted(),
            "mysql://nova:***@controller/nova?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        );
    }

    #[cfg(not(feature = "mysql"))]
    #[test]
    fn mysql_url_without_the_feature_names_it() {
        let err = parse(&DatabaseUrl::new("mysql://u:hunter2@h/db")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.to_string();
        assert!(
            msg.contains("db.url") && msg.contains("`mysql` cargo feature"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_url_with_the_feature_parses() {
        let target = parse(&DatabaseUrl::new("mysql://u:hunter2@h/db")).unwrap();
        assert_eq!(target.kind().feature(), "mysql");
        assert!(!format!("{target:?}").contains("hunter2"));
        assert_eq!(
            parse(&DatabaseUrl::new("mysql://u:hunter2@h/"))
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
    }
}
