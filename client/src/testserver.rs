//! A tiny scripted HTTP server for the tests: it answers one connection per canned
//! response, in order, and records the requests it received.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    pub headers: String,
    pub body: String,
}

/// A server answering the scripted responses; [`Server::finish`] returns the requests.
pub struct Server {
    pub url: String,
    handle: JoinHandle<Vec<Request>>,
}

impl Server {
    /// Serves `responses` (`("200 OK", body)`), one per connection, in order.
    pub fn start(responses: Vec<(&'static str, String)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for (status, body) in responses {
                let (mut stream, _) = listener.accept().unwrap();
                requests.push(read_request(&mut stream));
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            requests
        });
        Server { url, handle }
    }

    /// Waits until every scripted response was served; the requests received.
    pub fn finish(self) -> Vec<Request> {
        self.handle.join().unwrap()
    }
}

/// A listening port that answers nothing, to check that nothing connected.
pub struct Idle {
    pub url: String,
    listener: TcpListener,
}

impl Idle {
    pub fn start() -> Idle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Idle { url: format!("http://{}", listener.local_addr().unwrap()), listener }
    }

    pub fn assert_untouched(&self) {
        self.listener.set_nonblocking(true).unwrap();
        match self.listener.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("expected no connection, got {other:?}"),
        }
    }
}

fn read_request(stream: &mut TcpStream) -> Request {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the request head ended");
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.trim().parse::<usize>().unwrap());
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the request body ended");
        data.extend_from_slice(&buf[..n]);
    }
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    Request {
        method,
        target,
        headers: head.clone(),
        body: String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned(),
    }
}
