// Reads the device label's QR code: `iotbind:claim?serial=<serial>&code=<claim_code>` (what
// provisioning prints as claim_uri). Anything else is not ours, and returns null.
const PREFIX = 'iotbind:claim?'

function parseClaimUri(text) {
  if (typeof text !== 'string') return null
  const trimmed = text.trim()
  if (trimmed.indexOf(PREFIX) !== 0) return null
  const fields = {}
  trimmed.slice(PREFIX.length).split('&').forEach(function (pair) {
    const eq = pair.indexOf('=')
    if (eq <= 0) return
    try {
      fields[pair.slice(0, eq)] = decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' '))
    } catch (err) {
      // A broken escape makes the field unusable, and the checks below reject the code.
    }
  })
  if (!fields.serial || !fields.code) return null
  return { serial: fields.serial, claimCode: fields.code }
}

module.exports = { parseClaimUri }
