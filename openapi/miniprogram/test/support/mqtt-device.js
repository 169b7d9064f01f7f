// A small device for the end-to-end tests, run as a Node process of its own (the mqtt package
// would take jsdom for a browser): it connects to the embedded broker with its credentials,
// says online (retained), publishes telemetry, and answers set_relay commands the way the MQTT
// contract (openapi/asyncapi.yaml) describes firmware. It tells its parent what happens over the IPC channel.
const mqtt = require('mqtt')

const [url, deviceId, password] = process.argv.slice(2)
const base = `devices/${deviceId}`
let relay = false

function telemetry() {
  client.publish(`${base}/telemetry`, JSON.stringify({ values: { temperature: 21.5, relay } }), { qos: 1 })
}

const client = mqtt.connect(url, {
  clientId: deviceId,
  username: deviceId,
  password,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 10000,
  will: { topic: `${base}/status`, payload: 'offline', qos: 1, retain: true },
})

client.on('connect', () => {
  client.subscribe(`${base}/commands`, { qos: 1 }, (err) => {
    if (err) {
      process.send({ error: `subscribe: ${err.message}` })
      return
    }
    client.publish(`${base}/status`, 'online', { qos: 1, retain: true }, () => {
      telemetry()
      process.send({ ready: true })
    })
  })
})

client.on('message', (topic, payload) => {
  let command
  try {
    command = JSON.parse(payload.toString())
  } catch (err) {
    return
  }
  process.send({ command })
  let answer
  if (command.name === 'set_relay' && typeof (command.params || {}).on === 'boolean') {
    relay = command.params.on
    answer = { id: command.id, status: 'succeeded', result: { on: relay } }
  } else {
    answer = { id: command.id, status: 'rejected', error: `unknown command ${command.name}` }
  }
  client.publish(`${base}/commands/result`, JSON.stringify(answer), { qos: 1 }, () => telemetry())
})

client.on('error', (err) => {
  process.send({ error: err.message })
})

process.on('message', (message) => {
  if (message === 'stop') client.end(false, {}, () => process.exit(0))
})
