-- The part of Postfix Admin's schema that odmrd reads (tables mailbox,
-- domain, alias_domain; the other columns are left out). Postfix Admin
-- creates these itself; this file only builds a test database with the same
-- names. `active` is BOOLEAN in Postfix Admin's PostgreSQL schema and
-- TINYINT(1) in its MySQL one; the queries in postfixadmin.ini compare it
-- with '1', which works for both.
CREATE TABLE domain (
    domain VARCHAR(255) NOT NULL PRIMARY KEY,
    description VARCHAR(255) NOT NULL DEFAULT '',
    active SMALLINT NOT NULL DEFAULT 1
);
CREATE TABLE mailbox (
    username VARCHAR(255) NOT NULL PRIMARY KEY,
    password VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL DEFAULT '',
    local_part VARCHAR(255) NOT NULL,
    domain VARCHAR(255) NOT NULL,
    active SMALLINT NOT NULL DEFAULT 1
);
CREATE TABLE alias_domain (
    alias_domain VARCHAR(255) NOT NULL PRIMARY KEY,
    target_domain VARCHAR(255) NOT NULL,
    active SMALLINT NOT NULL DEFAULT 1
);
