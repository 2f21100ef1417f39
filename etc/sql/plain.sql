-- A plain credential store for odmrd's builtin:sql, of odmrd's own design.
-- Works as is in PostgreSQL, MariaDB/MySQL and SQLite (see plain.ini).
--
-- odmr_users: one row per ODMR login.
--   password  with a Dovecot {SCHEME} prefix: {PLAIN}secret, or {CRAM-MD5}<64 hex>
--             as `odmrd --cram-md5` or `doveadm pw -s CRAM-MD5` prints it
--   nologin   0 = may log in, anything else = refused
-- odmr_domains: the domains each login may collect with ATRN, one per row.
CREATE TABLE odmr_users (
    login    VARCHAR(255) NOT NULL PRIMARY KEY,
    password VARCHAR(255) NOT NULL,
    nologin  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE odmr_domains (
    login  VARCHAR(255) NOT NULL,
    domain VARCHAR(253) NOT NULL,
    PRIMARY KEY (login, domain)
);
