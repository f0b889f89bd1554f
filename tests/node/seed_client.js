// The classic client of the WebSocket handler's README, run against `wsledger serve`.
// Between the markers is the README's code, unchanged except for the URL; around it
// is only what a test needs (Node has no global WebSocket before v22, and the test
// must know when to stop).
const WebSocket = require('ws');
const url = process.argv[2];
const received = [];
const done = (code) => { console.log(JSON.stringify(received)); process.exit(code); };
setTimeout(() => done(2), 10000);

// --- begin: the README's client code ---
const ws = new WebSocket(url);

ws.onopen = () => {
  console.log('Connected to WebSocket');
};

ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  console.log('Received:', message);
};
// --- end: the README's client code ---

ws.addEventListener('message', (event) => {
  const message = JSON.parse(event.data);
  received.push(message);
  if (message.type === 'pong') { ws.close(1000, 'done'); }
});
ws.addEventListener('close', () => done(0));
ws.addEventListener('open', () => {
  // --- begin: the README's message examples ---
  // Start voice session
  ws.send(JSON.stringify({
    type: 'voice_start',
    data: {
      audioFormat: 'webm',
      sessionId: 'voice-session-123'
    }
  }));

  // Send audio data
  ws.send(JSON.stringify({
    type: 'voice_data',
    data: {
      audioData: 'base64-encoded-audio',
      sessionId: 'voice-session-123'
    }
  }));

  // End voice session
  ws.send(JSON.stringify({
    type: 'voice_end',
    data: {
      sessionId: 'voice-session-123'
    }
  }));

  ws.send(JSON.stringify({
    type: 'text_message',
    data: {
      content: 'Hello, AI!',
      sessionId: 'chat-session-123'
    }
  }));
  // --- end: the README's message examples ---
  ws.send(JSON.stringify({ type: 'ping' }));
});
