//! Finding transaction statements in what a MySQL/MariaDB client sends.
//!
//! Every packet is `int<3> payload length, int<1> sequence id, payload`.
//! A command starts a new exchange, so its packet has sequence id 0 (the
//! handshake response and authentication packets that precede commands have
//! higher ids); its first payload byte says which command. `COM_QUERY`
//! (0x03) carries SQL text: what sqlx 0.8 sends for `BEGIN` and for
//! `Transaction::commit` (`conn.execute("COMMIT")` with no arguments takes
//! the text protocol); statements with arguments go as `COM_STMT_PREPARE`
//! (0x16) and `COM_STMT_EXECUTE` (0x17), which the proxy counts but does not
//! read. A COMMIT is done at the end of its packet.
//!
//! The stream must be plain text: the fault run connects with
//! `ssl-mode=disabled`, and no compression is negotiated.

use super::{Form, Mark, Scanner, classify};

/// Payload bytes kept for reading: enough for a short statement.
const PREFIX: usize = 64;
const COM_QUERY: u8 = 0x03;

#[derive(Debug, Default)]
pub struct MySqlScanner {
    header: Vec<u8>,
    sequence: u8,
    remaining: usize,
    payload: Vec<u8>,
}

impl MySqlScanner {
    fn finished(&mut self, end: usize, marks: &mut Vec<Mark>) {
        let payload = std::mem::take(&mut self.payload);
        if self.sequence != 0 {
            return;
        }
        let Some((&command, rest)) = payload.split_first() else {
            return;
        };
        marks.push(Mark::Message(command));
        if command == COM_QUERY
            && let Some(statement) = classify(rest)
        {
            marks.push(Mark::Statement {
                statement,
                form: Form::MySqlQuery,
                end,
            });
        }
    }
}

impl Scanner for MySqlScanner {
    fn scan(&mut self, chunk: &[u8], marks: &mut Vec<Mark>) {
        let mut i = 0;
        while i < chunk.len() {
            if self.remaining == 0 && self.header.len() < 4 {
                self.header.push(chunk[i]);
                i += 1;
                if self.header.len() < 4 {
                    continue;
                }
                let h = &self.header;
                self.remaining =
                    usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
                self.sequence = h[3];
                self.payload.clear();
                if self.remaining == 0 {
                    self.header.clear();
                    self.finished(i, marks);
                }
                continue;
            }
            let take = self.remaining.min(chunk.len() - i);
            let keep = take.min(PREFIX.saturating_sub(self.payload.len()));
            self.payload.extend_from_slice(&chunk[i..i + keep]);
            self.remaining -= take;
            i += take;
            if self.remaining == 0 {
                self.header.clear();
                self.finished(i, marks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Statement;
    use super::*;

    fn packet(sequence: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut p = len.to_le_bytes()[..3].to_vec();
        p.push(sequence);
        p.extend_from_slice(payload);
        p
    }

    fn query(sql: &str) -> Vec<u8> {
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        packet(0, &payload)
    }

    fn found(stream: &[u8]) -> Vec<(Statement, usize)> {
        let mut s = MySqlScanner::default();
        let mut marks = Vec::new();
        s.scan(stream, &mut marks);
        marks
            .iter()
            .filter_map(|m| match m {
                Mark::Statement { statement, end, .. } => Some((*statement, *end)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_com_query_commit_is_found_at_the_end_of_its_packet() {
        // A handshake response whose payload happens to start with 0x03.
        let mut stream = packet(1, b"\x03COMMIT but not a command");
        stream.extend(query("BEGIN"));
        let begin_ends = stream.len();
        stream.extend(packet(0, b"\x17\x01\x00\x00\x00"));
        let before = stream.len();
        stream.extend(query("COMMIT"));
        stream.extend(query("SELECT 1"));
        assert_eq!(
            found(&stream),
            vec![
                (Statement::Begin, begin_ends),
                (Statement::Commit, before + 11)
            ]
        );
    }

    #[test]
    fn packets_split_across_chunks_are_still_read() {
        let stream = query("commit;");
        let mut s = MySqlScanner::default();
        let mut commits = 0;
        for byte in &stream {
            let mut marks = Vec::new();
            s.scan(std::slice::from_ref(byte), &mut marks);
            commits += marks
                .iter()
                .filter(|m| matches!(m, Mark::Statement { .. }))
                .count();
        }
        assert_eq!(commits, 1);
    }

    #[test]
    fn a_long_query_is_skipped_whole() {
        let mut stream = query(&format!("SELECT '{}'", "COMMIT".repeat(2000)));
        stream.extend(query("ROLLBACK"));
        assert_eq!(found(&stream), vec![(Statement::Rollback, stream.len())]);
    }
}
