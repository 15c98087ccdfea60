//! Policy and reply parsing: any JSON sent as an escalation policy must be refused with
//! reasons or accepted; any text a user replies over IM or SMS must parse to a command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_model::{Policy, ReplyCommand, parse_duration};

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = serde_json::from_slice::<Policy>(data) {
        let _ = policy.problems(&[]);
        let _ = Policy::default_for(&[]);
    }
    let text = String::from_utf8_lossy(data);
    let _ = ReplyCommand::parse(&text);
    let _ = parse_duration(&text);
});
