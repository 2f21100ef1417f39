//! STUB (replaced by the sasl-passwd branch).
#![allow(unused)]
pub fn new_challenge(hostname: &str) -> String { todo!() }
pub enum ResponseError { BadBase64, Malformed }
pub fn decode_cram_response(base64_line: &str) -> Result<(String, String), ResponseError> { todo!() }
pub fn verify(secret: &odmr_api::Secret, challenge: &str, digest_hex: &str) -> bool { todo!() }
pub fn cram_md5_context(password: &[u8]) -> [u8; 32] { todo!() }
pub fn cram_md5_entry(password: &[u8]) -> String { todo!() }
