//! An SMTP sink: accepts every mail and keeps it, so tests read what was "sent".

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The mails received so far, shared with the task that serves the port.
#[derive(Clone, Default)]
pub struct Sink {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    /// Serves SMTP on `listener` until the runtime ends.
    pub fn start(listener: TcpListener) -> Sink {
        let sink = Sink::default();
        let messages = sink.messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let messages = messages.clone();
                tokio::spawn(async move {
                    let _ = serve_smtp(stream, messages).await;
                });
            }
        });
        sink
    }

    /// Every mail body received, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

async fn serve_smtp(
    stream: tokio::net::TcpStream,
    messages: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        if !next_line(&mut read, &mut line).await? {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if command.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut body = String::new();
            loop {
                if !next_line(&mut read, &mut line).await? {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                body.push_str(&line);
            }
            messages.lock().unwrap().push(body);
            write.write_all(b"250 queued\r\n").await?;
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
}

/// Reads the next line into `line` (replacing what it held); false once the client hung
/// up.
async fn next_line(
    read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut String,
) -> std::io::Result<bool> {
    line.clear();
    Ok(read.read_line(line).await? > 0)
}
