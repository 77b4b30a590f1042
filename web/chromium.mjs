// What the page's Chromium drivers (drive.mjs, offline.mjs) share: the browser's flags. As
// root and with the machine's network closed, Chromium runs without its sandbox and
// without background networking; a fake microphone plays a WAV file.
export function chromiumArgs(job) {
  const args = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"];
  if (job.mic) {
    args.push("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              `--use-file-for-fake-audio-capture=${job.mic.wav}%noloop`,
              "--autoplay-policy=no-user-gesture-required");
  } else if (job.deny) {
    args.push("--use-fake-device-for-media-stream");
  }
  return args;
}
