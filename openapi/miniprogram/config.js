// The one file a team edits to point the mini program at their iotbind server.
module.exports = {
  // DevTools against `cargo run`: turn off domain checking ("不校验合法域名") in development.
  // In production this must be the https:// domain registered in the mini program's console.
  BASE_URL: 'http://127.0.0.1:8080',
  // wx.request gives up after this; the server answers a command with wait=true within
  // its timeout_ms (5 s here), so this leaves room for that.
  REQUEST_TIMEOUT_MS: 15000,
  // How long the device page's relay command may wait for the device's answer.
  COMMAND_TIMEOUT_MS: 5000,
}
