//! The Rust build of the JSON fixture (plugins/conformance/json_test.go): the SDK's JSON reader
//! and writer, driven from Go against encoding/json. Handlers:
//!
//! - `canon`: reads the input token by token and writes it back compact; malformed input fails
//!   with status invalid_input and the reader's message (`json: … at offset N`);
//! - `config`: the config value of the key in the input, read as JSON (`Config::get_json`) and
//!   written back the same way; an absent key fails with `missing key`.
//!
//! Build: `sh plugins/conformance/rust/build.sh`.

#[path = "../../../sdk/rust/wasmvisor.rs"]
mod wasmvisor;

use wasmvisor::json::{Reader, Token, Writer};

fn canon(input: &[u8]) -> Result<Vec<u8>, wasmvisor::json::Error> {
    let mut r = Reader::new(input);
    let mut w = Writer::new();
    while let Some(t) = r.next()? {
        match t {
            Token::BeginObject => w.begin_object(),
            Token::EndObject => w.end_object(),
            Token::BeginArray => w.begin_array(),
            Token::EndArray => w.end_array(),
            Token::Key(k) => w.key(k.unescape()),
            Token::String(s) => w.string(s.unescape()),
            Token::Number(n) => w.number_text(n),
            Token::Bool(b) => w.bool(b),
            Token::Null => w.null(),
        }
    }
    w.finish()
}

fn init() {
    wasmvisor::handle("canon", |input| Ok(canon(input)?));
    wasmvisor::handle("config", |key| match wasmvisor::config().get_json(key) {
        Some(v) => Ok(canon(v)?),
        None => Err("missing key".into()),
    });
}
