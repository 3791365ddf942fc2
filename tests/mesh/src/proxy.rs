//! A TCP proxy in front of a service that can lose its answers: while told to, whatever
//! the service sends back is dropped and the client's connection closed — the service
//! finished the work (committed) but the client never hears of it, as when the service
//! dies between its commit and its answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// See the module docs.
pub struct LossyProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    lose: Arc<AtomicBool>,
}

impl LossyProxy {
    /// Proxies connections to `target` until the runtime ends.
    pub async fn start(target: SocketAddr) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lose = Arc::new(AtomicBool::new(false));
        let losing = lose.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                tokio::spawn(pipe(client, server, losing.clone()));
            }
        });
        LossyProxy { addr, lose }
    }

    /// From now on (until told otherwise), answers are lost.
    pub fn lose_answers(&self, lose: bool) {
        self.lose.store(lose, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, lose: Arc<AtomicBool>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if lose.load(Ordering::SeqCst) {
            // The answer goes nowhere and the client's connection drops.
            break;
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
