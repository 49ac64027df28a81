"""Shows rpi-streamer's video in an OpenCV window, each frame with its capture time and
latency drawn on it. `q` or Esc quits.

    pip install ./clients/python opencv-python
    python clients/python/examples/opencv_view.py raspberrypi.local:8080

Latency (receive time - capture time) is true only when this machine's and the Pi's clocks
are synchronised (NTP).
"""

import datetime
import sys
import time

import cv2
import numpy

from rpi_streamer import Stream

address = sys.argv[1] if len(sys.argv) > 1 else "raspberrypi.local:8080"

with Stream(address) as stream:
    for frame in stream.frames():
        latency_ms = (time.time() - frame.ts) * 1e3
        # The JPEG as the daemon sent it, decoded by OpenCV straight to BGR.
        image = cv2.imdecode(numpy.frombuffer(frame.jpeg, numpy.uint8), cv2.IMREAD_COLOR)
        if image is None:
            continue  # not decodable: skip it rather than stop the viewer
        captured = datetime.datetime.fromtimestamp(frame.ts).strftime("%H:%M:%S.%f")[:-3]
        label = f"{captured}  {latency_ms:.0f} ms" + ("  NO SIGNAL" if frame.placeholder else "")
        corner = (10, image.shape[0] - 15)  # bottom left, clear of the test pattern's caption
        for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # outlined text
            cv2.putText(image, label, corner, cv2.FONT_HERSHEY_SIMPLEX, 0.8, colour, thickness)
        cv2.imshow(f"rpi-streamer {address}", image)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            break
cv2.destroyAllWindows()
