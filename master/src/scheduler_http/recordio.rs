//! RecordIO, Mesos' framing of the event stream: each record is
//! `<length of the JSON in bytes>\n<json>`, so a client can split the
//! stream without parsing it (HTTP chunk boundaries carry no meaning).

use axum::body::Bytes;
use serde_json::Value;

/// One RecordIO record: `<length of json in bytes>\n<json>`.
pub(crate) fn record(event: &Value) -> Bytes {
    let data = event.to_string();
    Bytes::from(format!("{}\n{}", data.len(), data))
}

/// Incremental RecordIO decoder: feed bytes as they arrive (HTTP chunk
/// boundaries mean nothing), take out complete records. The master only
/// encodes; this is the reference decoder its tests check the framing with.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct RecordIoDecoder {
    buf: Vec<u8>,
}

#[cfg(test)]
impl RecordIoDecoder {
    /// Appends `data` and returns every record now complete.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > 20 || !self.buf.iter().all(u8::is_ascii_digit) {
                    return Err("invalid RecordIO length prefix".into());
                }
                return Ok(out);
            };
            let len: usize = std::str::from_utf8(&self.buf[..nl])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "invalid RecordIO length prefix".to_string())?;
            if self.buf.len() < nl + 1 + len {
                return Ok(out);
            }
            let rec = self.buf[nl + 1..nl + 1 + len].to_vec();
            self.buf.drain(..nl + 1 + len);
            out.push(rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recordio_frames_and_decodes_across_arbitrary_chunks() {
        let a = json!({"type": "HEARTBEAT"});
        let b = json!({"type": "ERROR", "error": {"message": "héllo"}});
        let mut wire = record(&a).to_vec();
        wire.extend_from_slice(&record(&b));
        let text = String::from_utf8(wire.clone()).unwrap();
        assert!(
            text.starts_with("20\n{\"type\":\"HEARTBEAT\"}45\n"),
            "{text}"
        );
        for split in 1..wire.len() {
            let mut d = RecordIoDecoder::default();
            let mut got = d.push(&wire[..split]).unwrap();
            got.extend(d.push(&wire[split..]).unwrap());
            let vals: Vec<Value> = got
                .iter()
                .map(|r| serde_json::from_slice(r).unwrap())
                .collect();
            assert_eq!(vals, vec![a.clone(), b.clone()], "split at {split}");
        }
        assert!(RecordIoDecoder::default().push(b"x\n{}").is_err());
    }
}
