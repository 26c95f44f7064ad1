//! `peer-tungstenite`: idiomatic tokio + tokio-tungstenite broadcast server.
//!
//! One `tokio::sync::broadcast` channel of `Message` (payloads are `Bytes`/`Utf8Bytes`, so a
//! clone per subscriber is a refcount bump). Each subscriber is one task that `feed`s received
//! messages into its sink and `flush`es when the channel has nothing more ready; a publisher task
//! sends every data message it reads into the channel. A subscriber that falls more than
//! `CHANNEL_CAPACITY` messages behind skips ahead (counted, reported at exit).

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use ringcast_bench_peers::{
    Args, CHANNEL_CAPACITY, Role, add_lag, report_exit, runtime, shutdown_signal,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, http};

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = runtime(args.threads)?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("listening on ws://{}", listener.local_addr()?);
        let (tx, _) = broadcast::channel::<Message>(CHANNEL_CAPACITY);
        let accept = async {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        continue;
                    }
                };
                let tx = tx.clone();
                // Errors are client disconnects or bad requests: routine in a benchmark.
                tokio::spawn(async move {
                    let _ = handle(stream, tx).await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = shutdown_signal() => {}
        }
        report_exit("peer-tungstenite");
        Ok::<_, std::io::Error>(())
    })?;
    rt.shutdown_background();
    Ok(())
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
async fn handle(
    stream: TcpStream,
    tx: broadcast::Sender<Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let mut role = None;
    let mut rx = None;
    let ws = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, resp: Response| {
        role = Role::from_target(req.uri().path());
        if role.is_some() {
            // Subscribe before the 101 goes out so nothing published after it is missed.
            if role == Some(Role::Subscriber) {
                rx = Some(tx.subscribe());
            }
            Ok(resp)
        } else {
            let mut err = ErrorResponse::new(Some("unknown path: use /sub or /pub".into()));
            *err.status_mut() = http::StatusCode::NOT_FOUND;
            Err(err)
        }
    })
    .await?;
    match (role, rx) {
        (Some(Role::Subscriber), Some(mut rx)) => {
            drop(tx);
            let (mut sink, mut stream) = ws.split();
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Ok(msg) => {
                            sink.feed(msg).await?;
                            if rx.is_empty() {
                                sink.flush().await?;
                            }
                        }
                        Err(RecvError::Lagged(n)) => add_lag(n),
                        Err(RecvError::Closed) => break,
                    },
                    incoming = stream.next() => match incoming {
                        // Pings are answered by tungstenite on the next write/flush.
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    },
                }
            }
            let _ = sink.close().await;
        }
        (Some(Role::Publisher), _) => {
            let mut ws = ws;
            while let Some(msg) = ws.next().await {
                // Close: tungstenite queues the reply; the next poll sends it and ends the stream.
                if let msg @ (Message::Text(_) | Message::Binary(_)) = msg? {
                    // No subscribers is not an error.
                    let _ = tx.send(msg);
                }
            }
        }
        _ => {}
    }
    Ok(())
}
