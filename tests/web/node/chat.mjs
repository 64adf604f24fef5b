// Runs the AI SDK's own chat client (AbstractChat, which React's useChat wraps, with its
// DefaultChatTransport) against a UI message stream endpoint, and prints what it assembled.
//
//   node chat.mjs <ai|ai6> <url> <prompt> [stop]
//
// Output (one JSON line): {version, node, status, error, messages, data, stoppedAfter}.
const [pkg, url, prompt, mode] = process.argv.slice(2);
const ai = await import(pkg);
const { version } = (await import(`${pkg}/package.json`, { with: { type: "json" } })).default;

class State {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(m) { this.messages = this.messages.concat([m]); }
  popMessage() { this.messages = this.messages.slice(0, -1); }
  replaceMessage(i, m) { this.messages = [...this.messages.slice(0, i), m, ...this.messages.slice(i + 1)]; }
  snapshot(x) { return structuredClone(x); }
}

class Chat extends ai.AbstractChat {
  constructor(init) { super({ ...init, state: new State() }); }
}

const data = [];
const chat = new Chat({
  transport: new ai.DefaultChatTransport({ api: url }),
  onData: (part) => data.push(part),
  onError: () => {},
});

const assistantText = () => {
  const last = chat.messages[chat.messages.length - 1];
  if (!last || last.role !== "assistant") return "";
  return last.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
};

let stoppedAfter = null;
const sending = chat.sendMessage({ text: prompt });
if (mode === "stop") {
  while (assistantText() === "") await new Promise((r) => setTimeout(r, 5));
  stoppedAfter = assistantText();
  await chat.stop();
}
await sending;
console.log(JSON.stringify({
  version, node: process.versions.node, status: chat.status, error: chat.error ? chat.error.message : null,
  messages: chat.messages, data, stoppedAfter,
}));
