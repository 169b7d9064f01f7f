// One device: its state, the relay switch sent as a `set_relay` command that waits for the
// device's answer (succeeded, rejected, failed or timed out), its latest values and recent
// telemetry, rename, and unclaim.
const api = require('../../utils/api.js')
const config = require('../../config.js')
const format = require('../../utils/format.js')
const ui = require('../../utils/ui.js')

const RECENT_ROWS = 10

// What the user reads after the relay command ended, by the command's final status.
function commandOutcome(command, on) {
  const why = command.error ? '：' + command.error : ''
  switch (command.status) {
    case 'succeeded':
      return { ok: true, text: on ? '继电器已打开' : '继电器已关闭' }
    case 'rejected':
      return { ok: false, text: '设备拒绝了指令' + why }
    case 'failed':
      return { ok: false, text: '设备执行失败' + why }
    case 'timed_out':
      return { ok: false, text: '设备未响应，指令已超时' }
    default:
      return { ok: false, text: '指令状态未知，请稍后刷新' }
  }
}

Component({
  data: {
    id: '',
    device: null,
    seen: '',
    relayOn: false,
    sending: false,
    commandText: '',
    commandOk: false,
    latest: [],
    latestAt: '',
    telemetry: [],
    newName: '',
    renameText: '',
    renameOk: false,
    error: '',
  },

  methods: {
    onLoad: function (query) {
      this.setData({ id: query.id })
      return this.load()
    },

    onPullDownRefresh: async function () {
      await this.load()
      wx.stopPullDownRefresh()
    },

    load: async function () {
      const base = '/api/v1/devices/' + encodeURIComponent(this.data.id)
      try {
        const results = await Promise.all([
          api.request({ path: base }),
          api.request({ path: base + '/telemetry', query: { limit: RECENT_ROWS } }),
        ])
        this.show(results[0], results[1].items)
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ error: api.messageOf(err) })
      }
    },

    show: function (device, rows) {
      const latest = device.latest
      const relay = latest && typeof latest.values.relay === 'boolean' ? latest.values.relay : this.data.relayOn
      wx.setNavigationBarTitle({ title: device.name || device.serial })
      this.setData({
        device: device,
        seen: device.last_seen_at ? '最后上报 ' + format.ago(device.last_seen_at) : '从未上线',
        relayOn: this.data.sending ? this.data.relayOn : relay,
        latest: latest ? format.values(latest.values) : [],
        latestAt: latest ? format.dateTime(latest.ts) : '',
        telemetry: rows.map(function (r) {
          return {
            ts: r.ts,
            time: format.dateTime(r.ts),
            text: format.values(r.values).map(function (v) { return v.name + ' ' + v.value }).join('，'),
          }
        }),
        newName: this.data.newName || device.name || '',
        error: '',
      })
    },

    onRelay: async function (e) {
      const on = Boolean(e.detail.value)
      const before = !on
      this.setData({ sending: true, relayOn: on, commandOk: true, commandText: '正在发送指令…' })
      let outcome
      try {
        const command = await api.request({
          path: '/api/v1/devices/' + encodeURIComponent(this.data.id) + '/commands',
          method: 'POST',
          data: { name: 'set_relay', params: { on: on }, wait: true, timeout_ms: config.COMMAND_TIMEOUT_MS },
        })
        outcome = commandOutcome(command, on)
        if (command.status === 'succeeded' && command.result && typeof command.result.on === 'boolean') {
          outcome = commandOutcome(command, command.result.on)
          this.setData({ relayOn: command.result.on })
        }
      } catch (err) {
        if (api.isQuiet(err)) return
        outcome = { ok: false, text: api.messageOf(err) }
      }
      // Whatever did not succeed leaves the relay as it was, and the switch shows that.
      this.setData({ sending: false, commandOk: outcome.ok, commandText: outcome.text })
      if (!outcome.ok) this.setData({ relayOn: before })
    },

    onNewName: function (e) {
      this.setData({ newName: e.detail.value, renameText: '' })
    },

    onRename: async function () {
      const name = this.data.newName.trim()
      if (!name) {
        this.setData({ renameOk: false, renameText: '请输入设备名称' })
        return
      }
      try {
        const device = await api.request({
          path: '/api/v1/devices/' + encodeURIComponent(this.data.id), method: 'PATCH', data: { name: name },
        })
        wx.setNavigationBarTitle({ title: device.name })
        this.setData({ device: device, newName: device.name, renameOk: true, renameText: '已保存' })
      } catch (err) {
        if (!api.isQuiet(err)) this.setData({ renameOk: false, renameText: api.messageOf(err) })
      }
    },

    onUnclaim: async function () {
      const sure = await ui.confirm('移除设备', '移除后，设备的数据对你不再可见；再次添加需要标签上的认领码。', '移除')
      if (!sure) return
      try {
        await api.request({ path: '/api/v1/devices/' + encodeURIComponent(this.data.id), method: 'DELETE' })
        wx.showToast({ title: '已移除', icon: 'success' })
        wx.navigateBack()
      } catch (err) {
        ui.toastError(err)
      }
    },
  },
})
