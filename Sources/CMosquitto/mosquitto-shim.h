// libmosquitto, the MQTT client library devices use, for the device simulator.
#include <mosquitto.h>
