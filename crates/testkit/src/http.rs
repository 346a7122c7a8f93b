//! The tiny HTTP/1.1 plumbing a fake service needs: accept on 127.0.0.1:0, read
//! requests (`Content-Length` bodies only) one after another on each connection
//! and answer each, keeping the connection alive as the real APIs do (unless the
//! client asks `Connection: close`), or drop the connection unanswered.
//!
//! Used by [`crate::fake_stripe`] and [`crate::fake_metronome`].

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 1024 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Response {
    pub fn new(status: u16, body: String) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }
}

/// What to do with a request.
pub(crate) enum Reply {
    Respond(Response),
    /// Close the connection without answering.
    Drop,
}

/// Bind 127.0.0.1:0 and serve every connection with `handler` from a background
/// task (dropping or aborting the handle stops the server and its connections).
pub(crate) async fn serve<H, F>(handler: H) -> (SocketAddr, JoinHandle<()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("fake server: bind");
    let addr = listener.local_addr().expect("fake server: local_addr");
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(handle_conn(stream, handler.clone()));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (addr, task)
}

async fn handle_conn<H, F>(stream: TcpStream, handler: H)
where
    H: Fn(Request) -> F,
    F: Future<Output = Reply>,
{
    // Bytes read past the end of one request: the start of the next.
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&stream, &mut buf).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(msg) => {
                let body = format!("{{\"message\":\"Invalid HTTP request: {msg}.\"}}");
                write_response(&stream, &Response::new(400, body), false).await;
                return;
            }
        };
        let keep_alive = !req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        match handler(req).await {
            Reply::Respond(r) => {
                if !write_response(&stream, &r, keep_alive).await || !keep_alive {
                    return;
                }
            }
            // Dropping the socket closes it without a reply.
            Reply::Drop => return drop(stream),
        }
    }
}

async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The next request on the connection, from what `buf` holds and what comes;
/// leaves in `buf` what follows it. `Ok(None)`: the client closed the
/// connection before sending anything more. `Err`: a malformed request.
async fn read_request(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<Request>, &'static str> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large");
        }
        match read_some(stream, buf).await {
            Ok(0) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(0) | Err(_) => return Err("truncated request head"),
            Ok(_) => {}
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "non-UTF-8 request head")?;
    let mut lines = head.split("\r\n");
    let mut start = lines.next().unwrap_or_default().split(' ');
    let (method, target) = match (start.next(), start.next(), start.next()) {
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => (m, t),
        _ => return Err("malformed request line"),
    };
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line.split_once(':').ok_or("malformed header")?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err("chunked bodies are not supported, send Content-Length");
    }
    let len = req.header("content-length").unwrap_or("0");
    let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
    if len > MAX_BODY {
        return Err("body too large");
    }
    let body_start = head_end + 4;
    while buf.len() < body_start + len {
        if let Ok(0) | Err(_) = read_some(stream, buf).await {
            return Err("truncated body");
        }
    }
    req.body = buf[body_start..body_start + len].to_vec();
    buf.drain(..body_start + len);
    Ok(Some(req))
}

/// Whether the whole response was written.
async fn write_response(stream: &TcpStream, r: &Response, keep_alive: bool) -> bool {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        s if s >= 500 => "Server Error",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", r.status);
    out += &format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        r.body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (k, v) in &r.headers {
        out += &format!("{k}: {v}\r\n");
    }
    out += "\r\n";
    out += &r.body;
    write_all(stream, out.as_bytes()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo(req: Request) -> Reply {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        Reply::Respond(Response::new(200, format!("{} {}", req.path, body)))
    }

    /// Reads until the peer closes; returns what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read");
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn requests_on_one_connection_are_each_answered_until_the_client_asks_to_close() {
        let (addr, _server) = serve(echo).await;
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // Two requests in one write: the second starts inside the first's read.
        stream
            .write_all(
                b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\none\
                  POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwo",
            )
            .await
            .expect("write");
        let mut chunk = vec![0u8; 4096];
        let mut got = String::new();
        while !got.contains("/b two") {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed early after: {got}");
            got.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        assert_eq!(got.matches("Connection: keep-alive").count(), 2, "{got}");
        assert!(got.contains("/a one"), "{got}");
        stream
            .write_all(b"GET /c HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let last = read_to_close(&mut stream).await;
        assert!(last.contains("Connection: close"), "{last}");
        assert!(last.ends_with("/c "), "{last}");
    }
}
