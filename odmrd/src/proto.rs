//! STUB (replaced by the proto-config branch).
#![allow(unused)]
pub const MAX_COMMAND_LINE: usize = 512;
pub enum Line {
    Complete(Vec<u8>),
    TooLong,
}
pub struct LineSplitter;
impl LineSplitter {
    pub fn new(max: usize) -> Self {
        todo!()
    }
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        todo!()
    }
}
pub enum Command {
    Ehlo(String),
    Helo(String),
    Auth { mechanism: String, initial_response: Option<String> },
    Atrn(Vec<String>),
    Quit,
    Rset,
    Noop,
    Help,
    StartTls,
    NotImplemented(String),
}
pub enum CommandError {
    Unknown,
    Syntax(&'static str),
}
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    todo!()
}
pub fn is_valid_domain(d: &str) -> bool {
    todo!()
}
pub fn reply(code: u16, text: &str) -> String {
    todo!()
}
pub fn reply_multiline(code: u16, lines: &[&str]) -> String {
    todo!()
}
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}
impl Reply {
    pub fn class(&self) -> u8 {
        todo!()
    }
    pub fn text(&self) -> String {
        todo!()
    }
}
#[derive(Debug)]
pub enum ReplyError {
    Malformed(String),
    TooLong,
}
pub struct ReplyParser;
impl ReplyParser {
    pub fn new() -> Self {
        todo!()
    }
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        todo!()
    }
}
#[derive(Default, Debug, Clone)]
pub struct Capabilities {
    pub pipelining: bool,
    pub eightbitmime: bool,
    pub size: Option<u64>,
    pub smtputf8: bool,
    pub starttls: bool,
    pub chunking: bool,
}
impl Capabilities {
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        todo!()
    }
}
pub struct DotStuffer;
impl DotStuffer {
    pub fn new() -> Self {
        todo!()
    }
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        todo!()
    }
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        todo!()
    }
}
pub fn mail_from(sender: &str, size: Option<u64>, body_8bitmime: bool) -> String {
    todo!()
}
pub fn rcpt_to(address: &str) -> String {
    todo!()
}
