// The page that shows a certificate's password starts the download by
// itself, half a second after it is shown (the password stays on screen).
// A file, not an inline script: the pages' Content-Security-Policy allows
// scripts from this server only ('self', no 'unsafe-inline').
document.addEventListener('DOMContentLoaded', function () {
  var link = document.getElementById('download');
  if (link) {
    setTimeout(function () { link.click(); }, 500);
  }
});
