//! Java Object Serialization Stream (protocol 2) of an `org.apache.flink.util.SerializedThrowable`,
//! the `serialized-throwable` Flink's REST client deserializes from a `failure-cause`.
//!
//! The stream holds the original class name, the message (Throwable's `detailMessage`) and the
//! stringified stack trace; its `serializedException` is an empty byte array, which Flink cannot
//! deserialize, so it falls back to the stringified form. Text is capped at [`MAX_TEXT_CHARS`].

/// Longest message or stack trace text written, in characters.
pub const MAX_TEXT_CHARS: usize = 64 * 1024;

const SERIALIZED_THROWABLE_UID: i64 = 7284183123441947635;
const EXCEPTION_UID: i64 = -3387516993124229948;
const THROWABLE_UID: i64 = -3042686055658047285;
const BYTE_ARRAY_UID: i64 = -5984413125824719648;
const BASE_HANDLE: u32 = 0x7e_0000;

const TC_NULL: u8 = 0x70;
const TC_REFERENCE: u8 = 0x71;
const TC_CLASSDESC: u8 = 0x72;
const TC_OBJECT: u8 = 0x73;
const TC_STRING: u8 = 0x74;
const TC_ARRAY: u8 = 0x75;
const TC_ENDBLOCKDATA: u8 = 0x78;
const TC_LONGSTRING: u8 = 0x7c;
const SC_WRITE_METHOD: u8 = 0x01;
const SC_SERIALIZABLE: u8 = 0x02;

/// Java's modified UTF-8: NUL as two bytes, supplementary characters as surrogate pairs.
fn modified_utf8(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for unit in text.encode_utf16() {
        match unit {
            0x0001..=0x007f => out.push(unit as u8),
            0x0000 | 0x0080..=0x07ff => {
                out.push(0xc0 | (unit >> 6) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
            _ => {
                out.push(0xe0 | (unit >> 12) as u8);
                out.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                out.push(0x80 | (unit & 0x3f) as u8);
            }
        }
    }
    out
}

fn capped(text: &str) -> &str {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

struct Stream {
    bytes: Vec<u8>,
    next_handle: u32,
}

impl Stream {
    fn handle(&mut self) -> u32 {
        let handle = self.next_handle;
        self.next_handle += 1;
        handle
    }

    /// A name in a class descriptor: u16 length and modified UTF-8 (names here are short ASCII).
    fn utf(&mut self, text: &str) {
        let encoded = modified_utf8(text);
        self.bytes.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(&encoded);
    }

    fn string(&mut self, text: &str) -> u32 {
        let encoded = modified_utf8(text);
        if encoded.len() <= 0xffff {
            self.bytes.push(TC_STRING);
            self.bytes.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
        } else {
            self.bytes.push(TC_LONGSTRING);
            self.bytes.extend_from_slice(&(encoded.len() as u64).to_be_bytes());
        }
        self.bytes.extend_from_slice(&encoded);
        self.handle()
    }

    fn reference(&mut self, handle: u32) {
        self.bytes.push(TC_REFERENCE);
        self.bytes.extend_from_slice(&handle.to_be_bytes());
    }

    fn class_desc_header(&mut self, name: &str, uid: i64, flags: u8, fields: u16) {
        self.bytes.push(TC_CLASSDESC);
        self.utf(name);
        self.bytes.extend_from_slice(&uid.to_be_bytes());
        self.handle();
        self.bytes.push(flags);
        self.bytes.extend_from_slice(&fields.to_be_bytes());
    }

    /// An object field descriptor; returns the handle of its type string.
    fn object_field(&mut self, code: u8, name: &str, type_name: Result<&str, u32>) -> u32 {
        self.bytes.push(code);
        self.utf(name);
        match type_name {
            Ok(type_name) => self.string(type_name),
            Err(handle) => {
                self.reference(handle);
                handle
            }
        }
    }
}

/// The serialized `SerializedThrowable` whose `getOriginalErrorClassName()` is `class_name`,
/// `getMessage()` is `message` (None for a null message) and whose stack trace text is
/// `stack_trace`.
pub fn serialize(class_name: &str, message: Option<&str>, stack_trace: &str) -> Vec<u8> {
    let mut s = Stream { bytes: vec![0xac, 0xed, 0x00, 0x05, TC_OBJECT], next_handle: BASE_HANDLE };
    s.class_desc_header("org.apache.flink.util.SerializedThrowable", SERIALIZED_THROWABLE_UID, SC_SERIALIZABLE, 3);
    let string_type = s.object_field(b'L', "fullStringifiedStackTrace", Ok("Ljava/lang/String;"));
    s.object_field(b'L', "originalErrorClassName", Err(string_type));
    s.object_field(b'[', "serializedException", Ok("[B"));
    s.bytes.push(TC_ENDBLOCKDATA);
    s.class_desc_header("java.lang.Exception", EXCEPTION_UID, SC_SERIALIZABLE, 0);
    s.bytes.push(TC_ENDBLOCKDATA);
    s.class_desc_header("java.lang.Throwable", THROWABLE_UID, SC_SERIALIZABLE | SC_WRITE_METHOD, 4);
    s.object_field(b'L', "cause", Ok("Ljava/lang/Throwable;"));
    s.object_field(b'L', "detailMessage", Err(string_type));
    s.object_field(b'[', "stackTrace", Ok("[Ljava/lang/StackTraceElement;"));
    s.object_field(b'L', "suppressedExceptions", Ok("Ljava/util/List;"));
    s.bytes.push(TC_ENDBLOCKDATA);
    s.bytes.push(TC_NULL);
    s.handle(); // the object itself
                // Throwable's fields (default data of its writeObject), then the end of its block data.
    s.bytes.push(TC_NULL);
    match message {
        Some(message) => {
            s.string(capped(message));
        }
        None => s.bytes.push(TC_NULL),
    }
    s.bytes.push(TC_NULL);
    s.bytes.push(TC_NULL);
    s.bytes.push(TC_ENDBLOCKDATA);
    // SerializedThrowable's fields.
    s.string(capped(stack_trace));
    s.string(class_name);
    s.bytes.push(TC_ARRAY);
    s.class_desc_header("[B", BYTE_ARRAY_UID, SC_SERIALIZABLE, 0);
    s.bytes.push(TC_ENDBLOCKDATA);
    s.bytes.push(TC_NULL);
    s.handle();
    s.bytes.extend_from_slice(&0u32.to_be_bytes());
    s.bytes
}

/// [`serialize`] in standard base64 with padding, as Flink's REST answers carry it.
pub fn serialize_base64(class_name: &str, message: Option<&str>, stack_trace: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = serialize(class_name, message, stack_trace);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf8_encodes_nul_and_supplementary_characters_as_java_does() {
        assert_eq!(modified_utf8("a\0é"), vec![b'a', 0xc0, 0x80, 0xc3, 0xa9]);
        assert_eq!(modified_utf8("😀"), vec![0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]);
    }

    #[test]
    fn long_text_uses_a_long_string_and_is_capped() {
        let long = "é".repeat(MAX_TEXT_CHARS + 10);
        let bytes = serialize("java.lang.Exception", Some("m"), &long);
        assert!(bytes
            .windows(9)
            .any(|w| w[0] == TC_LONGSTRING && w[1..9] == ((MAX_TEXT_CHARS * 2) as u64).to_be_bytes()));
    }

    #[test]
    fn stream_starts_with_magic_and_ends_with_empty_byte_array() {
        let bytes = serialize("java.lang.Exception", None, "");
        assert_eq!(bytes[..5], [0xac, 0xed, 0x00, 0x05, TC_OBJECT]);
        assert_eq!(bytes[bytes.len() - 4..], [0, 0, 0, 0]);
    }
}
