// Applies the saved theme on the login page (the dashboard has the toggle).
(function () {
  var t = localStorage.getItem('dnsguard-theme');
  if (t === 'dark' || t === 'light') document.documentElement.dataset.theme = t;
  var m = document.getElementById('login-message');
  if (m && !m.textContent.trim()) m.hidden = true;
})();
