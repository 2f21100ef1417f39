-- vpopmail's MySQL table (vmysql.h, built with --enable-many-domains, the
-- default: one table `vpopmail` for all domains). vpopmail creates it
-- itself; this file only builds a test database with the same layout.
CREATE TABLE vpopmail (
    pw_name CHAR(32) NOT NULL,
    pw_domain VARCHAR(96) NOT NULL,
    pw_passwd VARCHAR(128),
    pw_uid INT,
    pw_gid INT,
    pw_gecos VARCHAR(64),
    pw_dir VARCHAR(160),
    pw_shell VARCHAR(20),
    pw_clear_passwd VARCHAR(128),
    PRIMARY KEY (pw_name, pw_domain)
);
