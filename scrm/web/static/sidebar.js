// scrm chat sidebar: inside WeCom, find out which customer this chat is with, then open their page.
// Registers the page with the corp's and the app's identity (ww.register; the app's signature is
// what wx.agentConfig used to take, doc 94313), signed by scrm (doc 90506), and asks
// getCurExternalContact (doc 91799). Any failure is shown on the page, never swallowed.
(function () {
  var box = document.getElementById("identify");
  if (!box) return;
  var errorLine = document.getElementById("identify-error");

  function fail(message) {
    errorLine.textContent = message;
    errorLine.hidden = false;
  }

  function signer(kind) {
    return function (url) {
      var query = "?kind=" + kind + "&url=" + encodeURIComponent(url);
      return fetch(box.dataset.signatureUrl + query, { credentials: "same-origin" }).then(function (resp) {
        return resp.json().then(function (body) {
          if (!resp.ok) throw new Error(body.error || "签名失败 signing failed (" + resp.status + ")");
          return body;
        });
      });
    };
  }

  if (typeof ww === "undefined") {
    fail("企业微信 JS-SDK 未加载 / WeCom's JS-SDK did not load; reload the page.");
    return;
  }
  ww.register({
    corpId: box.dataset.corpId,
    agentId: Number(box.dataset.agentId),
    jsApiList: ["getCurExternalContact"],
    getConfigSignature: signer("corp"),
    getAgentConfigSignature: signer("agent"),
    onConfigFail: function (res) {
      fail("企业签名失败 / WeCom refused the corp signature: " + (res && (res.errMsg || res.message)));
    },
    onAgentConfigFail: function (res) {
      fail("应用签名失败 / WeCom refused the app signature (agentConfig): " + (res && (res.errMsg || res.message)));
    },
  });
  ww.getCurExternalContact()
    .then(function (res) {
      if (!res || !res.userId) throw new Error("no userId");
      window.location.replace(box.dataset.sidebarUrl + "?external_userid=" + encodeURIComponent(res.userId));
    })
    .catch(function (err) {
      fail(
        "无法识别当前客户，请从客户聊天的工具栏打开 / Cannot tell who this chat is with; open the sidebar " +
          "from a customer chat's toolbar. (" + ((err && (err.errMsg || err.message)) || err) + ")"
      );
    });
})();
