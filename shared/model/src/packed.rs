//! Lists stored as one base64 string of fixed-size entries (a record's recent keys, its
//! acknowledgement numbers): written and read without a string per entry.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// `bytes` as the stored string.
pub(crate) fn pack(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// The bytes of a stored list of `unit`-byte entries that holds at most `capacity`; `what`
/// names the list in the error. A string longer than four times the capacity is refused
/// before it is decoded (a record is bounded by the KV's value size, but not this tightly).
pub(crate) fn unpack(v: &str, unit: usize, capacity: usize, what: &str) -> Result<Vec<u8>, String> {
    if v.len() > (capacity * unit).div_ceil(3) * 4 * 4 {
        return Err(format!(
            "{what}: {} bytes of base64, more than four times the capacity",
            v.len()
        ));
    }
    let packed = STANDARD_NO_PAD
        .decode(v)
        .map_err(|e| format!("{what}: not base64 ({e})"))?;
    if packed.len() % unit != 0 {
        return Err(format!(
            "{what}: {} bytes, not a whole number of {unit}-byte entries",
            packed.len()
        ));
    }
    Ok(packed)
}
