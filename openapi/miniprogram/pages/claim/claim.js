// The claim page: the label's QR code (iotbind:claim?serial=…&code=…) read with wx.scanCode,
// or serial and claim code typed in; claims the device for the user and returns to the list.
const api = require('../../utils/api.js')
const claimUri = require('../../utils/claim-uri.js')
const ui = require('../../utils/ui.js')

Component({
  data: {
    serial: '',
    claimCode: '',
    name: '',
    error: '',
    busy: false,
  },

  methods: {
    onSerial: function (e) {
      this.setData({ serial: e.detail.value, error: '' })
    },

    onClaimCode: function (e) {
      this.setData({ claimCode: e.detail.value, error: '' })
    },

    onName: function (e) {
      this.setData({ name: e.detail.value })
    },

    onScan: function () {
      wx.scanCode({
        onlyFromCamera: false,
        scanType: ['qrCode'],
        success: (res) => {
          const label = claimUri.parseClaimUri(res.result)
          if (!label) {
            this.setData({ error: '这不是设备标签上的二维码' })
            return
          }
          this.setData({ serial: label.serial, claimCode: label.claimCode, error: '' })
        },
        fail: (res) => {
          // Closing the scanner is not an error worth a message.
          if (res && /cancel/.test(res.errMsg || '')) return
          this.setData({ error: '无法打开扫码，请手动输入' })
        },
      })
    },

    onSubmit: async function () {
      if (this.data.busy) return
      const serial = this.data.serial.trim()
      const code = this.data.claimCode.trim()
      if (!serial || !code) {
        this.setData({ error: '请输入序列号和认领码' })
        return
      }
      const body = { serial: serial, claim_code: code }
      if (this.data.name.trim()) body.name = this.data.name.trim()
      this.setData({ busy: true, error: '' })
      try {
        await api.request({ path: '/api/v1/devices/claim', method: 'POST', data: body })
        wx.showToast({ title: '已添加', icon: 'success' })
        wx.navigateBack()
      } catch (err) {
        if (api.isQuiet(err)) return
        this.setData({ error: api.messageOf(err) })
        if (err.code === 'too_many_attempts') ui.toastError(err)
      } finally {
        this.setData({ busy: false })
      }
    },
  },
})
