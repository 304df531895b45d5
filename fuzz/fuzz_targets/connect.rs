//! CONNECT JSON as the server handles it: parse into a JSON object, fill in
//! the defaults, decode into `ConnectInfo`. Never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_protocol::ConnectInfo;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(mut fields)) =
        serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    for key in ["verbose", "pedantic"] {
        fields.entry(key).or_insert(serde_json::Value::Bool(true));
    }
    if let Ok(info) = serde_json::from_value::<ConnectInfo>(serde_json::Value::Object(fields)) {
        // What the server reads from it.
        let _ = (
            info.verbose,
            info.pedantic,
            info.echo,
            info.headers,
            info.protocol,
        );
        let _ = info.user.as_deref().map(str::len);
        let _ = info.jwt.as_deref().map(str::len);
    }
});
