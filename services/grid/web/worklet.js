// The live panel's sink: a bounded ring of samples posted from the page, played on the audio thread.
//
// Starts (and restarts after an underrun) once `prebuffer` frames are in, so one starvation counts as one underrun
// rather than one per render quantum; a push that would overflow `capacity` drops the oldest frames (counted).
// Reports {received, played, underruns, underrunFrames, dropped, fill} to the page about ten times a second.
"use strict";

class LiveSink extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { capacity, prebuffer } = options.processorOptions;
    this.buf = new Float32Array(capacity);
    this.prebuffer = Math.min(prebuffer, capacity);
    this.r = 0;
    this.fill = 0;
    this.started = false;
    this.ended = false;
    this.stats = { received: 0, played: 0, underruns: 0, underrunFrames: 0, dropped: 0, fill: 0 };
    this.lastReport = 0;
    this.port.onmessage = (e) => {
      if (e.data === "end") this.ended = true;
      else this.push(e.data);
    };
  }

  push(samples) {
    const cap = this.buf.length;
    let src = samples;
    if (src.length > cap) {
      this.stats.dropped += src.length - cap;
      src = src.subarray(src.length - cap);
    }
    const over = this.fill + src.length - cap;
    if (over > 0) { // the page is more than `capacity` ahead: keep the newest audio
      this.r = (this.r + over) % cap;
      this.fill -= over;
      this.stats.dropped += over;
    }
    let w = (this.r + this.fill) % cap;
    for (let k = 0; k < src.length; k++) {
      this.buf[w] = src[k];
      w = w + 1 === cap ? 0 : w + 1;
    }
    this.fill += src.length;
    this.stats.received += samples.length;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const first = out[0];
    const cap = this.buf.length;
    let k = 0;
    if (!this.started && this.fill >= this.prebuffer) this.started = true;
    if (this.started) {
      const n = Math.min(first.length, this.fill);
      for (; k < n; k++) {
        first[k] = this.buf[this.r];
        this.r = this.r + 1 === cap ? 0 : this.r + 1;
      }
      this.fill -= n;
      this.stats.played += n;
      if (n < first.length && !this.ended) { // starved: count it once, then wait for the prebuffer again
        this.stats.underruns += 1;
        this.stats.underrunFrames += first.length - n;
        this.started = false;
      }
    }
    first.fill(0, k);
    for (let c = 1; c < out.length; c++) out[c].set(first);
    if (currentFrame - this.lastReport >= sampleRate / 10) {
      this.lastReport = currentFrame;
      this.stats.fill = this.fill;
      this.port.postMessage(this.stats);
    }
    return true;
  }
}

registerProcessor("smf-live-sink", LiveSink);
