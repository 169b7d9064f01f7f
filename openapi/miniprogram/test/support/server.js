// Starts a real iotbind server for end-to-end tests: the binary at IOTBIND_BIN (default the
// workspace's debug build), free ports for HTTP and the embedded broker, a fresh SQLite file,
// development mode (the fake WeChat API under /dev/wechat). Also used by tests/browser.
const { spawn, execFileSync } = require('child_process')
const fs = require('fs')
const http = require('http')
const net = require('net')
const os = require('os')
const path = require('path')

const REPO_ROOT = path.resolve(__dirname, '../../../..')

function defaultBinary() {
  const target = process.env.CARGO_TARGET_DIR || path.join(REPO_ROOT, 'target')
  return path.join(target, 'debug', 'iotbind')
}

// The kernel picks the port; 1883 and 8080 may be taken on a developer's machine.
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port
      server.close(() => resolve(port))
    })
  })
}

function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 2000 }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

async function startServer() {
  const bin = process.env.IOTBIND_BIN || defaultBinary()
  if (!fs.existsSync(bin)) {
    throw new Error(`no iotbind binary at ${bin}: run 'cargo build --bin iotbind' or set IOTBIND_BIN`)
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iotbind-e2e-'))
  const httpPort = await freePort()
  const mqttPort = await freePort()
  const env = Object.assign({}, process.env, {
    IOTBIND_ENV: 'development',
    IOTBIND_HTTP_ADDR: `127.0.0.1:${httpPort}`,
    IOTBIND_MQTT_URL: 'embedded',
    IOTBIND_MQTT_LISTEN: `127.0.0.1:${mqttPort}`,
    IOTBIND_DATABASE_URL: `sqlite://${dir}/iotbind.db?mode=rwc`,
    IOTBIND_LOG_FORMAT: 'json',
  })
  // Development mode is what these tests are about: a real secret would turn the fake off.
  delete env.IOTBIND_WECHAT_SECRET
  delete env.IOTBIND_WECHAT_API_BASE
  delete env.IOTBIND_JWT_SECRET

  const logPath = path.join(dir, 'server.log')
  const logFd = fs.openSync(logPath, 'a')
  // cwd in the temp dir: development mode keeps files beside where it runs.
  const child = spawn(bin, ['serve'], { cwd: dir, env, stdio: ['ignore', logFd, logFd] })
  fs.closeSync(logFd)
  let exited = null
  child.on('exit', (code, signal) => { exited = { code, signal } })

  const baseUrl = `http://127.0.0.1:${httpPort}`
  const deadline = Date.now() + 60000
  for (;;) {
    if (exited) {
      throw new Error(`iotbind exited (${JSON.stringify(exited)}):\n${fs.readFileSync(logPath, 'utf8')}`)
    }
    try {
      if ((await get(`${baseUrl}/health/ready`)) === 200) break
    } catch (err) {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`iotbind was not ready within 60 s:\n${fs.readFileSync(logPath, 'utf8')}`)
    }
    await sleep(100)
  }

  return {
    baseUrl,
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    dir,
    // `iotbind device provision`: one JSON object per device, with claim_uri and MQTT secrets.
    provision(count) {
      const out = execFileSync(bin, ['device', 'provision', '--count', String(count || 1)], {
        cwd: dir, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
      })
      return out.trim().split('\n').map((line) => JSON.parse(line))
    },
    // `iotbind user create`: an account without WeChat, as an operator or the web would make.
    createUser(username, password) {
      execFileSync(bin, ['user', 'create', '--username', username], {
        cwd: dir, env, input: `${password}\n`, stdio: ['pipe', 'pipe', 'pipe'],
      })
    },
    log() {
      return fs.readFileSync(logPath, 'utf8')
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM')
        const until = Date.now() + 10000
        while (!exited && Date.now() < until) await sleep(50)
        if (!exited) child.kill('SIGKILL')
      }
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

module.exports = { startServer, freePort, REPO_ROOT }
