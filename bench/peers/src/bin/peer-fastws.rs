//! `peer-fastws`: tokio + fastwebsockets (hyper 1 upgrade) broadcast server.
//!
//! Same design as `peer-tungstenite`: one `tokio::sync::broadcast` channel of
//! `(OpCode, Bytes)`; each subscriber's writer task writes every received message with
//! `write_frame` (fastwebsockets has no send buffer: one write, or a 2-slice writev above 1 KiB
//! of payload, per frame), while a reader task on the split read half watches for close and
//! hands pong/close replies to the writer. A publisher reads whole messages
//! (`FragmentCollector`) and sends their payload, without copying, into the channel.

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, WebSocket, WebSocketError,
    upgrade,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ringcast_bench_peers::{
    Args, CHANNEL_CAPACITY, Role, add_lag, report_exit, runtime, shutdown_signal,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

type Msg = (OpCode, Bytes);
type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let rt = runtime(args.threads)?;
    rt.block_on(async {
        let listener = TcpListener::bind(args.listen).await?;
        eprintln!("listening on ws://{}", listener.local_addr()?);
        let (tx, _) = broadcast::channel::<Msg>(CHANNEL_CAPACITY);
        let accept = async {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let io = TokioIo::new(stream);
                    let service = service_fn(move |req| route(req, tx.clone()));
                    // Errors here are client disconnects or bad requests: nothing to do.
                    let _ = http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = shutdown_signal() => {}
        }
        report_exit("peer-fastws");
        Ok::<_, std::io::Error>(())
    })?;
    rt.shutdown_background();
    Ok(())
}

async fn route(
    mut req: Request<Incoming>,
    tx: broadcast::Sender<Msg>,
) -> Result<Response<Empty<Bytes>>, std::convert::Infallible> {
    let role = Role::from_target(req.uri().path());
    let Some(role) = role.filter(|_| upgrade::is_upgrade_request(&req)) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    // Subscribe before answering so nothing published after the upgrade is missed.
    let rx = (role == Role::Subscriber).then(|| tx.subscribe());
    tokio::spawn(async move {
        let Ok(ws) = fut.await else { return };
        let _ = match rx {
            Some(rx) => subscriber(ws, rx).await,
            None => publisher(ws, tx).await,
        };
    });
    Ok(response)
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut resp = Response::new(Empty::new());
    *resp.status_mut() = code;
    resp
}

async fn publisher(
    ws: WebSocket<Upgraded>,
    tx: broadcast::Sender<Msg>,
) -> Result<(), WebSocketError> {
    // Answers pings and close itself.
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let payload = match frame.payload {
                    Payload::Bytes(b) => b.freeze(),
                    Payload::Owned(v) => Bytes::from(v),
                    other => Bytes::copy_from_slice(&other),
                };
                let _ = tx.send((frame.opcode, payload));
            }
            OpCode::Close => return Ok(()),
            _ => {}
        }
    }
}

async fn subscriber(
    ws: WebSocket<Upgraded>,
    mut rx: broadcast::Receiver<Msg>,
) -> Result<(), WebSocketError> {
    let (read, mut write) = ws.split(tokio::io::split);
    // Replies the read half owes (pong, close) go to the writer; the channel closes when the
    // reader ends (close frame, EOF or error).
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<(OpCode, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut read = FragmentCollectorRead::new(read);
        let mut send = |frame: Frame<'_>| {
            let sent = ctl_tx.send((frame.opcode, frame.payload.to_vec()));
            std::future::ready(sent.map_err(|_| "writer gone"))
        };
        loop {
            match read.read_frame(&mut send).await {
                Ok(frame) if frame.opcode == OpCode::Close => break,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let result = async {
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok((opcode, payload)) => {
                        write.write_frame(Frame::new(true, opcode, None, Payload::Borrowed(&payload))).await?;
                    }
                    Err(RecvError::Lagged(n)) => add_lag(n),
                    Err(RecvError::Closed) => return Ok(()),
                },
                ctl = ctl_rx.recv() => match ctl {
                    Some((opcode, payload)) => {
                        write.write_frame(Frame::new(true, opcode, None, Payload::Owned(payload))).await?;
                        if opcode == OpCode::Close {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    reader.abort();
    result
}
