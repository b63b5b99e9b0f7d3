//! Finding transaction statements in what a PostgreSQL client sends.
//!
//! The frontend protocol (PostgreSQL docs, "Message Formats"): the first
//! message of a connection has no type byte (`int32 length, int32 code`:
//! a StartupMessage, or an SSLRequest / GSSENCRequest the server answers
//! with one byte before the real StartupMessage); every later message is
//! `byte type, int32 length (itself included), body`.
//!
//! Where a COMMIT can hide:
//!
//! - simple query, `'Q'` with the SQL text: what sqlx 0.8 sends for `BEGIN`
//!   and for `Transaction::commit` (`conn.execute("COMMIT")` with no
//!   arguments takes the simple protocol; the proxy's `GET /stats`
//!   confirms it under load);
//! - extended query: `'P'` Parse names a statement and its SQL, `'B'` Bind
//!   makes a portal of a statement, `'E'` Execute runs a portal, `'S'` Sync
//!   ends the batch. The scanner follows statement and portal names, so a
//!   COMMIT run this way is found too; it counts as done at the Sync after
//!   its Execute (the server answers the batch there).
//!
//! SSLRequest and GSSENCRequest are reported so the proxy can answer `N`
//! itself: the stream must stay plain text to be read, and every client
//! then continues without encryption (`sslmode=prefer`, sqlx's default).

use super::{Form, Mark, Scanner, Statement, classify};
use std::collections::HashSet;

/// Body bytes of a message kept for reading: names and short SQL.
const PREFIX: usize = 512;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

#[derive(Debug, Default)]
pub struct PgScanner {
    /// Past the untyped first message.
    typed: bool,
    /// The header read so far: type byte (when typed) and length.
    header: Vec<u8>,
    msg_type: u8,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// Offset in the stream where the current message started.
    started_at: u64,
    body: Vec<u8>,
    /// Bytes of the stream seen before the current chunk.
    offset: u64,
    commit_statements: HashSet<Vec<u8>>,
    commit_portals: HashSet<Vec<u8>>,
    /// An Execute of a COMMIT portal waits for its Sync.
    commit_executed: bool,
}

/// The NUL-terminated string at the start of `bytes`, and the rest.
fn cstr(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| *b == 0) {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &[]),
    }
}

impl PgScanner {
    fn header_len(&self) -> usize {
        if self.typed { 5 } else { 4 }
    }

    /// A whole message has been read; `end` is its end in the chunk.
    fn finished(&mut self, end: usize, chunk_start: u64, marks: &mut Vec<Mark>) {
        let body = std::mem::take(&mut self.body);
        if !self.typed {
            let code = body
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if matches!(code, Some(SSL_REQUEST | GSSENC_REQUEST)) {
                // The request started in this chunk (it is 8 bytes).
                let start = self.started_at.saturating_sub(chunk_start) as usize;
                marks.push(Mark::RefuseEncryption { start, end });
            } else {
                self.typed = true;
            }
            return;
        }
        marks.push(Mark::Message(self.msg_type));
        match self.msg_type {
            b'Q' => {
                let (sql, _) = cstr(&body);
                if let Some(statement) = classify(sql) {
                    marks.push(Mark::Statement {
                        statement,
                        form: Form::PgSimpleQuery,
                        end,
                    });
                }
            }
            b'P' => {
                let (name, rest) = cstr(&body);
                let (sql, _) = cstr(rest);
                if classify(sql) == Some(Statement::Commit) {
                    self.commit_statements.insert(name.to_vec());
                } else {
                    self.commit_statements.remove(name);
                }
            }
            b'B' => {
                let (portal, rest) = cstr(&body);
                let (statement, _) = cstr(rest);
                if self.commit_statements.contains(statement) {
                    self.commit_portals.insert(portal.to_vec());
                } else {
                    self.commit_portals.remove(portal);
                }
            }
            b'E' => {
                let (portal, _) = cstr(&body);
                self.commit_executed |= self.commit_portals.contains(portal);
            }
            b'C' => {
                let (name, _) = cstr(body.get(1..).unwrap_or_default());
                match body.first() {
                    Some(b'S') => self.commit_statements.remove(name),
                    Some(b'P') => self.commit_portals.remove(name),
                    _ => false,
                };
            }
            b'S' if self.commit_executed => {
                self.commit_executed = false;
                marks.push(Mark::Statement {
                    statement: Statement::Commit,
                    form: Form::PgExtended,
                    end,
                });
            }
            _ => {}
        }
    }
}

impl Scanner for PgScanner {
    fn scan(&mut self, chunk: &[u8], marks: &mut Vec<Mark>) {
        let chunk_start = self.offset;
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining == 0 && self.header.len() < self.header_len() {
                if self.header.is_empty() {
                    self.started_at = chunk_start + i as u64;
                }
                self.header.push(chunk[i]);
                i += 1;
                if self.header.len() < self.header_len() {
                    continue;
                }
                let (msg_type, len) = if self.typed {
                    let h = &self.header;
                    (h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]]))
                } else {
                    let h = &self.header;
                    (0, u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
                };
                self.msg_type = msg_type;
                self.remaining = (len as usize).saturating_sub(4);
                self.body.clear();
                if self.remaining == 0 {
                    self.header.clear();
                    self.finished(i, chunk_start, marks);
                }
                continue;
            }
            let take = self.remaining.min(chunk.len() - i);
            let keep = take.min(PREFIX.saturating_sub(self.body.len()));
            self.body.extend_from_slice(&chunk[i..i + keep]);
            self.remaining -= take;
            i += take;
            if self.remaining == 0 {
                self.header.clear();
                self.finished(i, chunk_start, marks);
            }
        }
        self.offset += chunk.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn startup() -> Vec<u8> {
        let body = b"\x00\x03\x00\x00user\x00postgres\x00\x00";
        let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    }

    fn query(sql: &str) -> Vec<u8> {
        message(b'Q', format!("{sql}\0").as_bytes())
    }

    fn statements(marks: &[Mark]) -> Vec<(Statement, Form, usize)> {
        marks
            .iter()
            .filter_map(|m| match m {
                Mark::Statement {
                    statement,
                    form,
                    end,
                } => Some((*statement, *form, *end)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_simple_query_commit_is_found_where_it_ends() {
        let mut stream = startup();
        stream.extend(query("BEGIN"));
        stream.extend(query("SELECT 1"));
        let commit_starts = stream.len();
        stream.extend(query("COMMIT"));
        stream.extend(query("SELECT 2"));
        let mut s = PgScanner::default();
        let mut marks = Vec::new();
        s.scan(&stream, &mut marks);
        let found = statements(&marks);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, Statement::Begin);
        assert_eq!(
            found[1],
            (Statement::Commit, Form::PgSimpleQuery, commit_starts + 12)
        );
    }

    #[test]
    fn messages_split_across_chunks_are_still_read() {
        let mut stream = startup();
        stream.extend(query("commit"));
        let mut s = PgScanner::default();
        let mut marks = Vec::new();
        let mut ends = Vec::new();
        for (n, byte) in stream.iter().enumerate() {
            marks.clear();
            s.scan(std::slice::from_ref(byte), &mut marks);
            ends.extend(
                statements(&marks)
                    .into_iter()
                    .map(|(st, _, end)| (st, n, end)),
            );
        }
        assert_eq!(ends, vec![(Statement::Commit, stream.len() - 1, 1)]);
    }

    #[test]
    fn an_extended_protocol_commit_is_found_at_its_sync() {
        let mut stream = startup();
        stream.extend(message(b'P', b"s1\0COMMIT\0\0\0"));
        stream.extend(message(b'B', b"p1\0s1\0\0\0\0\0\0\0"));
        stream.extend(message(b'E', b"p1\0\0\0\0\0"));
        let sync_starts = stream.len();
        stream.extend(message(b'S', b""));
        // Another statement through the same names is not a commit.
        stream.extend(message(b'P', b"s1\0SELECT 1\0\0\0"));
        stream.extend(message(b'B', b"p1\0s1\0\0\0\0\0\0\0"));
        stream.extend(message(b'E', b"p1\0\0\0\0\0"));
        stream.extend(message(b'S', b""));
        let mut s = PgScanner::default();
        let mut marks = Vec::new();
        s.scan(&stream, &mut marks);
        assert_eq!(
            statements(&marks),
            vec![(Statement::Commit, Form::PgExtended, sync_starts + 5)]
        );
    }

    #[test]
    fn an_ssl_request_is_reported_for_refusal_and_the_startup_still_read() {
        let mut stream = 8u32.to_be_bytes().to_vec();
        stream.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        stream.extend(startup());
        stream.extend(query("COMMIT"));
        let mut s = PgScanner::default();
        let mut marks = Vec::new();
        s.scan(&stream, &mut marks);
        assert!(matches!(
            marks[0],
            Mark::RefuseEncryption { start: 0, end: 8 }
        ));
        assert_eq!(statements(&marks).len(), 1);
    }

    #[test]
    fn savepoints_and_long_statements_are_not_commits() {
        let mut stream = startup();
        stream.extend(query("RELEASE SAVEPOINT _sqlx_savepoint_1"));
        stream.extend(query(&format!("SELECT '{}'", "x".repeat(4000))));
        stream.extend(query("COMMIT PREPARED 'x'"));
        let mut s = PgScanner::default();
        let mut marks = Vec::new();
        s.scan(&stream, &mut marks);
        assert!(statements(&marks).is_empty());
    }
}
